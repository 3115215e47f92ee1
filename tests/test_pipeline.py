"""`pipeline.run` in-process: every experiment preset stays alive, failures are recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from subpop_runner import pipeline
from subpop_runner.attacks.label_flip import LabelFlip
from subpop_runner.data.adult import Adult
from subpop_runner.errors import ConfigError

from .conftest import ROOT, recording_trainer, write_adult_files, write_tiny_bert

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# Presets whose datasets cannot be had offline here (CIFAR-10, UTKFace, the aclImdb archive):
# they must fail with one error naming the fix (their data, or pretrained weights, which also
# download), before any MLflow run.
NEEDS_DATA = {"cifar10": "data_dir|weights", "utkface": "data_dir", "imdb": "download"}
SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("adult_*.yaml"))


def config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"tracking.dir={tmp_path / 'mlruns'}", *overrides])


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_runs_in_smoke_size(tmp_path, preset):
    size = (
        "smoke_text"
        if preset.startswith("imdb")
        else "smoke_ft"
        if preset.endswith("_ft")
        else "smoke"
    )
    cfg = config(
        tmp_path, f"experiment={preset}", f"size={size}", f"cache.dir={tmp_path / 'stages'}"
    )
    dataset = cfg.dataset._target_.rsplit(".", 1)[-1].lower()
    if dataset in NEEDS_DATA and cfg.dataset.get("source", "files") != "offline":
        if "download" in cfg.dataset:
            cfg.dataset.download = False  # no internet here: the error, not a hang
        with pytest.raises(ConfigError, match=NEEDS_DATA[dataset]):
            pipeline.run(cfg)
        assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # no run, not even a store
        return
    result = pipeline.run(cfg)
    assert result.summary["subpops/attacked"] >= 1
    assert len(result.subpops) >= result.summary["subpops/attacked"]


def test_a_job_that_raises_leaves_a_failed_run(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("attack exploded")

    monkeypatch.setattr(LabelFlip, "poison", broken)
    cfg = config(tmp_path, "experiment=smoke_adult", "trainer.max_epochs=2")
    with pytest.raises(RuntimeError, match="attack exploded"):
        pipeline.run(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke_adult")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweeps_compose_with_alpha_axis(sweep):
    with initialize_config_dir(config_dir=str(ROOT / "sweeps"), version_base="1.3"):
        cfg = compose(
            sweep,
            overrides=[f"hydra.searchpath=[file://{ROOT / 'conf'}]"],
            return_hydra_config=True,
        )
    params = cfg.hydra.sweeper.params
    if sweep.startswith("adult_reference"):  # the learner check: α=1, both learners
        assert (params["attack.alpha"], params["model"]) == ("1", "mlp,sklearn_mlp")
    elif sweep == "adult_attacks_trim":  # one defended row: LF against GO poisons at α=1
        assert (params["attack.alpha"], params["attack"]) == (
            "1",
            "label_flip,gradient_optimization",
        )
    else:
        assert params["attack.alpha"] == "0.5,1,2"
    assert cfg.name in {"adult_cluster_match", "adult_feature_match"}


def tiny(tmp_path: Path, data_dir: Path, *overrides: str):
    """smoke_adult on the 240 hand-made rows of `write_adult_files`, 4 clusters; 3 epochs of
    5 mini-batches each, fast enough that the batches' random order shows in the results."""
    return config(
        tmp_path,
        "experiment=smoke_adult",
        f"dataset.data_dir={data_dir}",
        "dataset.verify=false",
        "dataset.max_rows=null",
        "trainer.max_epochs=3",
        "model.head.batch_size=16",
        "model.head.learning_rate=0.05",
        "selector.k=4",
        *overrides,
    )


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> Path:
    """One MLflow store for the tests below (creating one costs seconds)."""
    return tmp_path_factory.mktemp("tracking")


def test_victims_train_on_train_with_their_own_poison_and_the_surrogate_on_aux(
    tmp_path, tracking, monkeypatch
):
    calls: list = []
    monkeypatch.setattr(pipeline, "victim_trainer", lambda *args: recording_trainer(calls))
    data_dir = write_adult_files(tmp_path / "adult")
    cfg = tiny(tracking, data_dir, "cache.enabled=false", "attack.alpha=0.5")
    result = pipeline.run(cfg)
    splits = Adult(data_dir=str(data_dir), verify=False).load(seed=0)
    clean, surrogate, poisoned = calls
    assert clean[0] == "clean victim" and np.array_equal(clean[1].x, splits.train.x)
    assert surrogate[0] == "surrogate on aux" and np.array_equal(surrogate[1].x, splits.aux.x)
    assert [len(p) for p in clean[2] + surrogate[2]] == [0, 0]
    assert np.array_equal(poisoned[1].x, splits.train.x)
    attacked = result.subpops[result.subpops["status"] == "attacked"].set_index("id")
    assert [p.subpop_id for p in poisoned[2]] == list(attacked.index)
    for poison in poisoned[2]:
        assert len(poison) == int(0.5 * attacked.loc[poison.subpop_id, "aux_size"])
        assert np.array_equal(poison.x, splits.aux.x[poison.source_index])


def test_a_subpopulation_whose_budget_rounds_to_no_poison_still_finishes_the_run(
    tmp_path, tracking, monkeypatch
):
    # α=0.05 of clusters of 16-24 aux rows: 0 poison points for the two smaller ones (they
    # once crashed the run's provenance table after every victim had trained).
    monkeypatch.setattr(pipeline, "victim_trainer", lambda *args: recording_trainer([]))
    data_dir = write_adult_files(tmp_path / "adult")
    result = pipeline.run(tiny(tracking, data_dir, "cache.enabled=false", "attack.alpha=0.05"))
    counts = result.subpops.set_index("id")["poison_count"]
    assert sorted(counts) == [0, 0, 1, 1]
    client = MlflowClient(f"sqlite:///{tracking / 'mlruns' / 'mlflow.db'}")
    assert client.get_run(result.run_id).info.status == "FINISHED"
    poison = pd.read_csv(client.download_artifacts(result.run_id, "poison.csv", str(tmp_path)))
    assert sorted(poison["subpop_id"]) == sorted(counts[counts > 0].index)
    assert (poison["moved_l2"] == 0).all()


def cached_run(tracking: Path, data_dir: Path, cache: Path, seed: int):
    """One tiny run on ``cache``: its result and how each stage was obtained."""
    result = pipeline.run(tiny(tracking, data_dir, f"cache.dir={cache}", f"seed={seed}"))
    client = MlflowClient(f"sqlite:///{tracking / 'mlruns' / 'mlflow.db'}")
    tags = client.get_run(result.run_id).data.tags
    return result, {k: v for k, v in tags.items() if k.startswith("cache.")}


STAGES = ("cache.clean_victim", "cache.surrogate", "cache.clustering")


def same_numbers(a: pipeline.Result, b: pipeline.Result) -> None:
    np.testing.assert_equal(a.summary, b.summary)
    pd.testing.assert_frame_equal(a.subpops, b.subpops)


def test_another_seed_on_one_cache_reuses_nothing_of_the_first(tmp_path, tracking):
    data_dir = write_adult_files(tmp_path / "adult")
    cached_run(tracking, data_dir, tmp_path / "shared", seed=0)
    second, outcome = cached_run(tracking, data_dir, tmp_path / "shared", seed=1)
    assert outcome == dict.fromkeys(STAGES, "miss")
    alone, _ = cached_run(tracking, data_dir, tmp_path / "fresh", seed=1)
    same_numbers(second, alone)


def test_the_same_seed_again_reuses_every_stage_with_identical_numbers(tmp_path, tracking):
    data_dir = write_adult_files(tmp_path / "adult")
    first, outcome = cached_run(tracking, data_dir, tmp_path / "cache", seed=3)
    assert outcome == dict.fromkeys(STAGES, "miss")
    again, outcome = cached_run(tracking, data_dir, tmp_path / "cache", seed=3)
    assert outcome == dict.fromkeys(STAGES, "hit")
    same_numbers(first, again)


def test_a_data_file_changed_in_place_is_a_cache_miss(tmp_path, tracking):
    data_dir = write_adult_files(tmp_path / "adult")
    cached_run(tracking, data_dir, tmp_path / "cache", seed=0)
    write_adult_files(data_dir, seed=1)  # same path, other rows
    _, outcome = cached_run(tracking, data_dir, tmp_path / "cache", seed=0)
    assert outcome == dict.fromkeys(STAGES, "miss")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # the encoder's vocabulary is not the tokenizer's
        (["model=bert_ll", "model.frozen.name={bert}"], "another vocabulary"),
        # longer sequences than the encoder has positions (the tiny BERT has 32)
        (
            ["model=bert_ft", "model.network.name={bert}", "dataset.tokenizer={bert}"],
            "position limit",
        ),
        # neither a folder nor a hub name
        (["model=bert_head", "model.backbone.name=/no/such/encoder"], "hub name"),
        # token ids into a model that reads table rows
        (["model=mlp"], "token ids"),
    ],
)
def test_text_bad_input_is_one_error_before_any_run(tmp_path, tiny_bert, overrides, message):
    cfg = config(
        tmp_path,
        "dataset=imdb",
        "dataset.max_rows=60",
        "dataset.max_length=64",
        f"dataset.cache_dir={tmp_path / 'tokens'}",
        "selector.representation=pooled",
        *(o.format(bert=tiny_bert) for o in overrides),
    )
    with pytest.raises(ConfigError, match=message):
        pipeline.run(cfg)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


# Words frequent in IMDB reviews: a tiny BERT whose vocabulary lacks them reads every review as
# [CLS] [UNK] ... [SEP], identical inputs that no clustering can tell apart (one cluster holding
# every test point, and no collateral to measure).
REVIEW_WORDS = (
    "the a and of to is it in i this that was as with for movie film but on not you are his "
    "have he be one all at by an they who so from like her just about out if has what some "
    "good bad great there can more when very up even no time my would which story only really"
).split()


@pytest.fixture(scope="module")
def review_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("review_bert"), vocab=REVIEW_WORDS)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["bert_ll", "bert_ft", "bert_head"])
def test_text_victims_run_through_the_pipeline_and_the_frozen_pass_is_cached(
    tmp_path, review_bert, model
):
    """Real reviews (the offline copy, 20 per part), a tiny BERT that knows common review
    words as encoder and tokenizer: each BERT option runs the six steps into one MLflow run; a
    second job reuses the cached token ids and, where there is one, the frozen pass, and gives
    the same numbers (a metric that is NaN in one is NaN in the other)."""
    encoder = {"bert_ll": "frozen", "bert_ft": "network", "bert_head": "backbone"}[model]
    overrides = (
        "dataset=imdb",
        f"model={model}",
        f"model.{encoder}.name={review_bert}",
        f"dataset.tokenizer={review_bert}",
        "dataset.max_rows=60",
        "dataset.max_length=16",
        f"dataset.cache_dir={tmp_path / 'tokens'}",
        f"cache.dir={tmp_path / 'stages'}",
        "trainer.max_epochs=1",
        "selector.k=4",
        "selector.representation=pooled",
    )
    first = pipeline.run(config(tmp_path, *overrides))
    assert first.summary["subpops/attacked"] >= 2  # the reviews' features are told apart
    assert first.summary["collateral_damage/worst5_n"] >= 1
    assert 0.0 <= first.summary["clean_accuracy"] <= 1.0
    again = pipeline.run(config(tmp_path, *overrides))
    assert again.summary == pytest.approx(first.summary, nan_ok=True)  # same seed, same numbers
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    run = client.get_run(again.run_id)
    if model != "bert_ft":
        assert run.data.tags["cache.features"] == "hit"
    assert run.data.tags["cache.clean_victim"] == "hit"


def test_a_tokenizer_that_knows_the_reviews_words_gives_distinct_inputs_and_features(
    tmp_path, review_bert
):
    """The guard for the test above: the reviews it clusters must differ as token ids and as
    the features it clusters (``pooled``: mean-pooled for the head-only option, the pooled
    [CLS] for BERT-LL and BERT-FT), or it measures nothing."""
    import torch

    from subpop_runner.data.imdb import IMDB
    from subpop_runner.models.bert import BertClassifier, BertEncoder

    imdb = IMDB(tokenizer=str(review_bert), max_rows=60, max_length=16, cache_dir=str(tmp_path))
    ids = imdb.load(0).aux.x
    assert len(np.unique(ids, axis=0)) == len(ids)
    encoder = BertEncoder(name=str(review_bert))
    classifier = BertClassifier(name=str(review_bert), n_classes=2).eval()
    with torch.no_grad():
        for network in (encoder, classifier):
            features = network.representation(torch.from_numpy(ids), "pooled")
            assert torch.pdist(features).min() > 1e-5, type(network).__name__
