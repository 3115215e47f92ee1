import numpy as np
import pytest

from subpop_runner.selectors.base import mean_confidence, take_ranked
from subpop_runner.selectors.cluster_match import ClusterMatch


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
