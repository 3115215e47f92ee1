"""Every model option in ``conf/model`` (a new file joins without editing this test), built
from its own config by ``hydra.utils.instantiate`` with the real classes, shrunk to a tiny
size: pretrained weights that would be downloaded are replaced by a random start, BERT by a
tiny random BERT, image sides by the smallest the network allows, epochs by two.

Each option must (1) read at least one of three kinds of data (a table, grey images, token
ids) and refuse the others with a `ConfigError` before any training, and (2) train victims on
the kind it reads that offer the victim interface (`tests.victims.check_interface`),
with keep masks that keep every row giving the same victims as no masks.
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
from functools import partial
from pathlib import Path
from textwrap import dedent

import lightning as L
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from sklearn.linear_model import LogisticRegression

import subpop_runner
import subpop_runner.schema  # noqa: F401  (registers the config schemas)
from subpop_runner.data.tokens import vocabulary_digest
from subpop_runner.defenses.certified import CertifiedRidge, RidgeHead, SmoothedRidge
from subpop_runner.defenses.fine_pruning import NewLastLayer
from subpop_runner.defenses.impossibility import LogisticVictims
from subpop_runner.errors import ConfigError
from subpop_runner.models.bert import load_tokenizer
from subpop_runner.models.linear_head import LinearHead
from subpop_runner.training.base import Fit
from subpop_runner.training.fixed_features import FixedFeatures
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import FEATURES, Victims
from subpop_runner.types import Part, PoisonSet, Splits
from tests.conftest import write_tiny_bert
from tests.victims import check_interface

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


def model_options(conf: Path) -> list[str]:
    return sorted(p.stem for p in (conf / "model").glob("*.yaml"))


OPTIONS = model_options(CONF)
KINDS = ("table", "images", "tokens")


def on_imagenet_backbone(option: str) -> bool:
    """Whether the option builds a network from ``conf/model/backbone`` (VGG-16 holds 138M
    parameters before its ImageNet top is dropped): seconds to tens of seconds even tiny."""
    defaults = OmegaConf.load(ROOT / "conf" / "model" / f"{option}.yaml").get("defaults", [])
    return any(
        isinstance(entry, DictConfig) and any(str(k).startswith("backbone") for k in entry)
        for entry in defaults
    )


def tiny(node: DictConfig, bert: Path) -> None:
    """Shrink a model config in place, whatever its shape: every BERT (a node with ``name``
    and ``download``) becomes ``bert``, downloaded weights a random start, image sides 32,
    widths 2, epochs 2."""
    with open_dict(node):
        for key in list(node.keys()):
            if OmegaConf.is_interpolation(node, key):
                continue
            value = node[key]
            if isinstance(value, DictConfig):
                tiny(value, bert)
            elif key == "name" and "download" in node:
                node.name, node.download = str(bert), False
            elif key == "weights":
                node.weights = None
            elif key == "resolution":
                node.resolution = 32
            elif key == "width":
                node.width = 2
            elif key in ("epochs", "max_iter"):
                node[key] = 2


def build(option: str, bert: Path, conf: Path = CONF) -> tuple[Regime, DictConfig]:
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={option}"])
    tiny(cfg.model, bert)
    return instantiate(cfg.model), cfg


def rows(kind: str, n: int, seed: int) -> Part:
    """Two classes of ``kind``: 4 table columns, 1×8×8 grey images, or 12 token ids (the last
    four padding), class 1 shifted (brighter, larger ids)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    if kind == "table":
        x = rng.normal(0, 1, (n, 4)) + y[:, None]
    elif kind == "images":
        x = rng.uniform(-0.5, 0.5, (n, 1, 8, 8)) + 0.3 * y[:, None, None, None]
    else:
        ids = rng.integers(5, 25, (n, 12)) + 20 * y[:, None]
        return Part(np.where(np.arange(12) < 8, ids, 0), y)
    return Part(x.astype(np.float32), y)


def splits_of(kind: str, bert: Path) -> Splits:
    vocabulary = (
        vocabulary_digest(load_tokenizer(str(bert), download=False)) if kind == "tokens" else None
    )
    parts = (rows(kind, 24, seed) for seed in range(3))
    return Splits(*parts, class_names=("a", "b"), vocabulary=vocabulary)


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert"))


def test_every_model_option_is_checked_here():
    """The suite is built from conf/model: the paper's families are all in it."""
    assert {"mlp", "sklearn_mlp", "conv", "vgg_ll", "vgg_ft"} <= set(OPTIONS)
    assert {"efficientnet_ll", "efficientnet_ft", "bert_head", "bert_ll", "bert_ft"} <= set(
        OPTIONS
    )


@pytest.mark.parametrize(
    "option",
    [pytest.param(o, marks=pytest.mark.slow) if on_imagenet_backbone(o) else o for o in OPTIONS],
)
def test_a_model_option_reads_its_data_refuses_the_rest_and_offers_the_victim_interface(
    option, bert, one_torch_thread
):
    check_option(option, bert)


def test_a_new_model_file_joins_the_suite(tmp_path, bert, one_torch_thread):
    """A family config dropped into conf/model is checked without editing this test."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "model" / "wide_linear.yaml").write_text(
        dedent(
            """
            defaults:
              - /schema/model/fixed_features@_here_
              - /schema/head/linear@head
              - _self_
            _target_: subpop_runner.training.fixed_features.FixedFeatures
            backbone: null
            batch_size: 64
            head:
              _target_: subpop_runner.models.linear_head.LinearHead
              _partial_: true
              batch_size: 8
              learning_rate: 0.05
              l2: 0.0
              epochs: 3
            """
        )
    )
    assert "wide_linear" in model_options(conf) and "wide_linear" not in OPTIONS
    check_option("wide_linear", bert, conf)


def check_option(option: str, bert: Path, conf: Path = CONF) -> None:
    regime, cfg = build(option, bert, conf)
    read = []
    for kind in KINDS:
        try:
            regime.check(splits_of(kind, bert))
        except ConfigError as error:
            assert str(error), kind
        else:
            read.append(kind)
    assert read, f"model={option} reads none of {KINDS}: add the kind it reads here"

    splits = splits_of(read[0], bert)
    poison = PoisonSet(1, splits.aux.x[:6], 1 - splits.aux.y[:6], np.arange(6))
    sets = [PoisonSet.empty(splits.input_shape), poison]
    trainer = partial(L.Trainer, accelerator="cpu", devices=1, max_epochs=2)

    def train(keep=None):
        fit = Fit(trainer, seed=0, batched=cfg.training.batched, splits=splits)
        return regime.fit(splits.train, sets, fit, keep=keep)

    victims = train()
    check_interface(
        victims,
        splits.test.x,
        [p.x for p in sets],
        splits.test.y,
        gradients=regime.gradients,
        layers=regime.layers,
    )
    # Keeping every row trains exactly the victims of no mask (same seed, same numbers).
    everything = [np.ones(len(splits.train) + len(p), bool) for p in sets]
    np.testing.assert_array_equal(
        train(everything).predict_proba(splits.test.x), victims.predict_proba(splits.test.x)
    )


def victims_classes() -> dict[str, type[Victims]]:
    """Every `Victims` implementation in the package (each module imported, subclasses read)."""
    for module in pkgutil.walk_packages(subpop_runner.__path__, "subpop_runner."):
        if not module.name.startswith("subpop_runner.__main__"):
            importlib.import_module(module.name)
    found, todo = {}, [Victims]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("subpop_runner."):
                found[sub.__name__] = sub
            todo.append(sub)
    return found


def head_victims(splits: Splits) -> Victims:
    regime = FixedFeatures(head=partial(LinearHead, epochs=3, learning_rate=0.05))
    fit = Fit(partial(L.Trainer, accelerator="cpu", devices=1), seed=0, splits=splits)
    poison = PoisonSet(1, splits.aux.x[:6], 1 - splits.aux.y[:6], np.arange(6))
    return regime.fit(splits.train, [PoisonSet.empty(splits.input_shape), poison], fit)


def ridge_heads(splits: Splits, victims: Victims) -> list[RidgeHead]:
    features = victims.representation(splits.train.x, FEATURES)
    return [RidgeHead.fit(f, splits.train.y, 2, l2=1.0, q=0.1, flips=2) for f in features]


# How to make each implementation that no conf/model option returns; the ones it returns
# (`HeadVictims`, `NetworkVictims`, `SklearnVictims`) are checked above, from their configs.
MADE_BY_DEFENSES = {
    "NewLastLayer": lambda s: (
        victims := head_victims(s),
        NewLastLayer(victims, [(0.5 * w, b) for w, b in victims.last_layer()]),
    )[1],
    "SmoothedRidge": lambda s: SmoothedRidge(v := head_victims(s), ridge_heads(s, v)),
    "CertifiedRidge": lambda s: CertifiedRidge(v := head_victims(s), ridge_heads(s, v)),
    "LogisticVictims": lambda s: LogisticVictims(
        [LogisticRegression(C=c).fit(s.train.x, s.train.y) for c in (0.1, 1.0)]
    ),
}
FROM_CONFIGS = {"HeadVictims", "NetworkVictims", "SklearnVictims"}


def test_every_victims_implementation_is_checked():
    """A new `Victims` class fails here until it is made in one of the checks."""
    assert set(victims_classes()) == FROM_CONFIGS | set(MADE_BY_DEFENSES)


@pytest.mark.parametrize("name", sorted(MADE_BY_DEFENSES))
def test_the_victims_defenses_return_offer_the_victim_interface(name, one_torch_thread):
    splits = Splits(*(rows("table", 24, seed) for seed in range(3)), class_names=("a", "b"))
    victims = MADE_BY_DEFENSES[name](splits)
    assert type(victims).__name__ == name
    own = [np.zeros((0, 4), np.float32), splits.aux.x[:3]]
    check_interface(victims, splits.test.x, own, splits.test.y, gradients=False)
