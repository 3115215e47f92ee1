"""Every config value is checked once, up front: each key of each config group, given a value
of the wrong type or out of range, fails with one line naming the key and what is valid."""

from __future__ import annotations

import typing
from dataclasses import fields
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from subpop_runner import schema
from subpop_runner.errors import ConfigError
from subpop_runner.tracking import experiment_name

from .conftest import ROOT

GROUPS = ("dataset", "model", "selector", "attack", "trainer", "tracking")
# A value of the wrong type for each annotation (a string is never the wrong type for text).
WRONG_TYPE = {int: ["abc", "1.5"], float: ["abc"], bool: ["maybe"], list: ["notalist"]}


def compose_config(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def first_error(*overrides: str) -> str:
    """The one `error:` line the CLI would print for these overrides."""
    try:
        schema.validate(compose_config(*overrides))
    except Exception as error:  # Hydra's and OmegaConf's own types, or ConfigError
        message = schema.explain(error)
        assert message is not None, f"not explained: {error!r}"
        assert "\n" not in message
        return message
    raise AssertionError(f"no error for {overrides}")


def bad_values(spec) -> list[str]:
    annotation = typing.get_type_hints(spec_owner[spec.name]).get(spec.name)
    base = typing.get_origin(annotation) or annotation
    if base is typing.Union or isinstance(annotation, type(int | None)):
        base = next(a for a in typing.get_args(annotation) if a is not type(None))
        base = typing.get_origin(base) or base
    values = list(WRONG_TYPE.get(base, []))
    check = spec.metadata.get("check")
    if check is not None:
        values.append(check.bad)
    return values


spec_owner: dict[str, type] = {}


def node_cases(choice: str, node, prefix: str) -> list[tuple[str, str, str]]:
    """Cases for every field of ``node``'s schema and of the schemas nested in it (a model's
    head, network and backbone)."""
    found = []
    for spec in fields(OmegaConf.get_type(node)):
        child = node[spec.name]
        if isinstance(child, DictConfig) and OmegaConf.get_type(child) is not dict:
            found += node_cases(choice, child, f"{prefix}.{spec.name}")
            continue
        spec_owner[spec.name] = OmegaConf.get_type(node)
        found += [(choice, f"{prefix}.{spec.name}", bad) for bad in bad_values(spec)]
    return found


def cases() -> list[tuple[str, str, str]]:
    """(group choice override, key, bad value) for every field of every option's schema."""
    found = []
    for group in GROUPS:
        for option in sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")):
            found += node_cases(
                f"{group}={option}", compose_config(f"{group}={option}")[group], group
            )
    for backbone in sorted(p.stem for p in (ROOT / "conf" / "model" / "backbone").glob("*.yaml")):
        choice = f"model=vgg_ll model/backbone={backbone}"
        node = compose_config(*choice.split())["model"]["backbone"]
        found += node_cases(choice, node, "model.backbone")
    top = [("seed", s) for s in ("abc", "1.5", "-3")] + [
        ("training.batched", "maybe"),
        ("training.memory_mb", "abc"),
        ("training.memory_mb", "0"),
        ("cache.enabled", "maybe"),
    ]
    return found + [("", key, bad) for key, bad in top]


@pytest.mark.parametrize(("choice", "key", "bad"), cases())
def test_every_key_refuses_a_bad_value_naming_key_and_valid_values(choice, key, bad):
    message = first_error(*choice.split(), f"{key}={bad}")
    assert message.startswith(f"{key}: ")
    assert "; valid: " in message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["selector=nonexistent"], "selector: no option 'nonexistent'; valid: cluster_match, "),
        (["selector.kk=3"], "selector.kk: no such key; valid keys: take, n, k, "),
        (["+model.dropout=0.5"], "model.dropout: no such key"),
        (["selector.take=lowest"], "selector.take: "),
        (["selector.take=[lowest]"], "selector.n: is null but take=['lowest']"),
        (["selector=feature_match", "selector.max_size=5"], "selector.max_size: 5 < min_size"),
        (["dataset.train_fraction=0.6", "dataset.aux_fraction=0.6"], "dataset.test_fraction"),
        (["attack.alpha=abc"], "attack.alpha: Value 'abc'"),
        (["model=vgg_ll", "model/backbone=bogus"], "model/backbone: no option 'bogus'; valid: "),
        (["model=conv", "model.network.width=0"], "model.network.width: got 0"),
    ],
)
def test_errors_name_the_key_and_the_fix(overrides, expected):
    assert first_error(*overrides).startswith(expected)


def test_take_is_a_list_of_options_not_letters():
    cfg = compose_config("selector.take=[lowest,highest]", "selector.n=2")
    schema.validate(cfg)
    assert list(cfg.selector.take) == ["lowest", "highest"]


def test_a_sweep_value_and_a_single_value_log_alike():
    """α typed as a float: ``attack.alpha=1`` is 1.0 whether it came from a sweep or not."""
    assert compose_config("attack.alpha=1").attack.alpha == 1.0
    assert isinstance(compose_config("attack.alpha=1").attack.alpha, float)


@pytest.mark.parametrize("trainer", ["cpu", "smoke", "gpu"])
def test_size_smoke_caps_epochs_with_any_trainer(trainer):
    cfg = compose_config(f"trainer={trainer}", "size=smoke")
    assert cfg.trainer.max_epochs <= 3
    assert cfg.dataset.max_rows <= 3000


def test_gpu_trainer_without_gpu_names_the_portable_choice(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="trainer.accelerator=auto"):
        schema.validate(compose_config("trainer=gpu"))


def test_paths_resolve_against_the_launch_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config("tracking.dir=store", "cache.dir=/abs/cache", "dataset.data_dir='~/d'")
    schema.resolve_paths(cfg)
    assert cfg.tracking.dir == str(tmp_path / "store")
    assert cfg.cache.dir == "/abs/cache"
    assert cfg.dataset.data_dir == str(Path("~/d").expanduser())


def test_results_config_leaves_out_what_cannot_change_a_number():
    one = schema.results_config(compose_config("tracking.dir=a", "training.memory_mb=64"))
    other = schema.results_config(compose_config("tracking.dir=b", "dataset.data_dir=/x"))
    assert one == other
    assert schema.results_config(compose_config("seed=1")) != other


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "adult_cluster_match"),
        (["experiment=adult_feature_match"], "adult_feature_match"),
        (["size=smoke"], "adult_cluster_match_smoke"),
        (["experiment=imdb_minilm_head", "size=smoke_text"], "imdb_minilm_head_smoke"),
        (
            ["experiment=fashion_mnist_efficientnet_ft", "size=smoke_ft"],
            "fashion_mnist_efficientnet_ft_smoke",
        ),
        (["selector=feature_match"], "adult_mlp_feature_match_label_flip"),
        (["selector=feature_match", "size=smoke"], "adult_mlp_feature_match_label_flip_smoke"),
        (["selector.k=50"], "adult_cluster_match"),
        (["defense=trim"], "adult_cluster_match_trim"),
        (["defense=trim", "defense.warm_start=true"], "adult_cluster_match_trim_warm"),
    ],
)
def test_experiment_name_follows_what_was_run(overrides, name):
    assert experiment_name(compose_config(*overrides, hydra=True)) == name
