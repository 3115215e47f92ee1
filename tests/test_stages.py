"""The cached stages train on the right data: the clean victim on train with no poison, the
surrogate on aux."""

from __future__ import annotations

import numpy as np

from subpop_runner.stages import clean_victim, surrogate_features

from .conftest import recording_trainer


def test_clean_victim_trains_on_train_alone(blob_splits):
    calls: list = []
    clean = clean_victim(recording_trainer(calls), blob_splits)
    ((_, part, poison_sets),) = calls
    assert part is blob_splits.train
    assert [len(p) for p in poison_sets] == [0]
    assert clean["proba_aux"].shape == (len(blob_splits.aux), 2)
    assert clean["pred_test"].shape == (len(blob_splits.test),)


def test_surrogate_trains_on_aux_alone(blob_splits):
    calls: list = []
    features = surrogate_features(recording_trainer(calls), blob_splits, "hidden")
    ((_, part, poison_sets),) = calls
    assert part is blob_splits.aux
    assert [len(p) for p in poison_sets] == [0]
    for name in ("aux", "train", "test"):
        assert np.array_equal(features[name], getattr(blob_splits, name).x)
