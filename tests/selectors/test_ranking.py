from dataclasses import replace

import numpy as np
import pytest

from subpop_runner.selectors.base import mean_confidence, take_ranked
from subpop_runner.selectors.cluster_match import ClusterMatch
from subpop_runner.types import Part


def test_mean_confidence_is_probability_of_the_true_class():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 0, 1])
    assert mean_confidence(proba, labels, np.array([True, True, False])) == pytest.approx(0.55)


@pytest.mark.parametrize(
    ("take", "expected"),
    [
        (["all"], list(range(10))),
        (["lowest"], [0, 1]),
        (["middle"], [4, 5]),
        (["highest"], [8, 9]),
        (["lowest", "highest"], [0, 1, 8, 9]),
    ],
)
def test_take_ranked_windows(take, expected):
    assert take_ranked(list(range(10)), take, n=2) == expected


@pytest.mark.parametrize("take", [["lowest"], ["middle"], ["highest"]])
def test_each_window_takes_every_item_when_fewer_than_n_are_ranked(take):
    assert take_ranked(list(range(3)), take, n=5) == [0, 1, 2]


def test_mean_confidence_without_members_is_undefined():
    proba = np.array([[0.9, 0.1]])
    assert np.isnan(mean_confidence(proba, np.array([0]), np.array([False])))


def test_lowest_confidence_subpopulations_are_attacked_first(blob_splits):
    proba = np.full((len(blob_splits.aux), 2), 0.5)
    is_low = (blob_splits.aux.annotations["group"] == "g3").to_numpy()
    proba[is_low] = [0.9, 0.1]  # g3 points have label 1: confidence 0.1
    selection = ClusterMatch(
        k=4, representation="input", pca_components=2, take=["lowest"], n=1
    ).select(blob_splits, proba, {p: getattr(blob_splits, p).x for p in ("aux", "train", "test")})
    (attacked,) = selection.attacked
    assert attacked.clean_confidence == pytest.approx(0.1)
    assert selection.count("not selected") == 3


def test_subpops_without_test_points_are_kept_counted_and_left_out_of_the_ranking(blob_splits):
    test = blob_splits.test
    keep = (test.annotations["group"] != "g3").to_numpy()  # no test points near blob g3
    splits = replace(blob_splits, test=Part(test.x[keep], test.y[keep], test.annotations[keep]))
    group = splits.aux.annotations["group"].to_numpy()
    proba = np.full((len(splits.aux), 2), 0.5)
    proba[group == "g3"] = [0.9, 0.1]  # g3 (label 1) would rank lowest: confidence 0.1
    proba[group == "g2"] = [0.3, 0.7]  # g2 (label 0) is next: confidence 0.3
    selection = ClusterMatch(
        k=4, representation="input", pca_components=2, take=["lowest"], n=1
    ).select(splits, proba, {p: getattr(splits, p).x for p in ("aux", "train", "test")})
    (attacked,) = selection.attacked
    assert attacked.clean_confidence == pytest.approx(0.3)
    (empty,) = [s for s in selection.candidates if not s.test.any()]
    assert selection.status[empty.id] == "no test points"
    assert empty.clean_confidence == pytest.approx(0.1)
    assert len(selection.candidates) == 4 and selection.count("not selected") == 2
