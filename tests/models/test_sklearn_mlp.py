"""The scikit-learn reference victim: one MLPClassifier per poison set, on train ∪ its poison,
meeting the same subpopulations and poison sets as the batched MLP."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.neural_network import MLPClassifier

from subpop_runner import pipeline, schema
from subpop_runner.errors import ConfigError
from subpop_runner.models import sklearn_mlp
from subpop_runner.models.sklearn_mlp import SklearnMLP
from subpop_runner.types import Part, PoisonSet, Splits

from ..conftest import small_adult_config


def flip_blob(part: Part, blob: int, copies: int) -> PoisonSet:
    """``copies`` copies of each point of one blob with the other label."""
    rows = np.flatnonzero(part.annotations["group"] == f"g{blob}")
    index = np.repeat(rows, copies)
    return PoisonSet(blob, part.x[index], 1 - part.y[index], index)


def regime() -> SklearnMLP:
    return SklearnMLP(surrogate=None, hidden_units=10, max_iter=500)


def test_each_victim_learns_its_own_poison_and_only_it(blob_splits):
    empty = PoisonSet.empty(blob_splits.input_shape)
    sets = [empty, flip_blob(blob_splits.aux, 0, 5), flip_blob(blob_splits.aux, 3, 5)]
    victims = regime().fit(blob_splits.train, sets, SimpleNamespace(seed=0))
    test = blob_splits.test
    accuracy = (victims.predict(test.x) == test.y).astype(float)
    in_blob = [(test.annotations["group"] == f"g{b}").to_numpy() for b in range(4)]
    assert accuracy.shape == (3, len(test))
    assert accuracy[0].mean() > 0.9  # the clean victim
    assert accuracy[1][in_blob[0]].mean() < 0.2 and accuracy[1][in_blob[3]].mean() > 0.9
    assert accuracy[2][in_blob[3]].mean() < 0.2 and accuracy[2][in_blob[0]].mean() > 0.9


class RecordingMLP(MLPClassifier):
    """An MLPClassifier that keeps a copy of the rows each fit is given."""

    fits: list[tuple[np.ndarray, np.ndarray]] = []

    def fit(self, x, y):
        self.fits.append((x.copy(), y.copy()))
        return super().fit(x, y)


def test_each_fit_sees_train_then_exactly_its_own_poison_rows_in_order(blob_splits, monkeypatch):
    monkeypatch.setattr(sklearn_mlp, "MLPClassifier", RecordingMLP)
    RecordingMLP.fits = []
    train = blob_splits.train
    sets = [flip_blob(blob_splits.aux, 2, 3), flip_blob(blob_splits.aux, 0, 1)]
    victims = regime().fit(train, sets, SimpleNamespace(seed=0))
    assert len(victims.models) == len(RecordingMLP.fits) == len(sets)
    for (x, y), poison in zip(RecordingMLP.fits, sets, strict=True):
        assert np.array_equal(x, np.concatenate([train.x, poison.x]))
        assert np.array_equal(y, np.concatenate([train.y, poison.y]))


def test_same_seed_same_victims_and_the_hidden_layer_is_the_classifiers(blob_splits):
    sets = [flip_blob(blob_splits.aux, 1, 2)]
    one = regime().fit(blob_splits.train, sets, SimpleNamespace(seed=3))
    two = regime().fit(blob_splits.train, sets, SimpleNamespace(seed=3))
    x = blob_splits.test.x
    assert np.array_equal(one.predict_proba(x), two.predict_proba(x))
    (model,) = one.models
    hidden = one.representation(x, "hidden")[0]
    assert np.allclose(hidden, np.maximum(x @ model.coefs_[0] + model.intercepts_[0], 0))
    with pytest.raises(ValueError, match="valid: input, hidden"):
        one.representation(x, "pooled")


def test_images_are_refused_with_the_fix():
    images = Part(np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ConfigError, match="tabular rows only"):
        regime().check(Splits(images, images, images, class_names=("a", "b")))


def compose_config(tmp_path: Path, *overrides: str):
    return small_adult_config(tmp_path, "selector.k=4", *overrides, epochs=5)


def test_a_bad_value_is_one_config_error(tmp_path):
    cfg = compose_config(tmp_path, "model=sklearn_mlp", "model.max_iter=0")
    with pytest.raises(ConfigError, match="model.max_iter"):
        schema.validate(cfg)


@pytest.mark.slow
def test_both_learners_meet_the_same_subpopulations_and_poison_sets(tmp_path):
    """What makes the comparison paired: per seed, the clusters and poison points are the
    batched MLP's whichever learner trains the victims."""
    tables = {}
    for model in ("mlp", "sklearn_mlp"):
        result = pipeline.run(compose_config(tmp_path, f"model={model}"))
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
        folder = client.download_artifacts(result.run_id, "", str(tmp_path / model))
        # Rows come in each clean victim's ranking order, which differs between learners.
        subpops = result.subpops[["id", "aux_size", "train_size", "test_size", "poison_count"]]
        poisons = pd.read_csv(Path(folder) / "poison.csv")
        tables[model] = (
            subpops.sort_values("id").reset_index(drop=True),
            poisons.sort_values("subpop_id", kind="stable").reset_index(drop=True),
        )
    (subpops, poisons), (other_subpops, other_poisons) = tables.values()
    pd.testing.assert_frame_equal(subpops, other_subpops)
    pd.testing.assert_frame_equal(poisons, other_poisons)
