import numpy as np
import pytest

from subpop_runner.attacks.label_flip import LabelFlip, flip_label, poison_count
from subpop_runner.data.splits import Part
from subpop_runner.selectors.base import Subpopulation


@pytest.fixture
def aux() -> Part:
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.array([0] * 14 + [1] * 6)
    return Part(x, y)


def subpop(members: np.ndarray) -> Subpopulation:
    return Subpopulation(id=3, description="", aux=members, train=members, test=members)


@pytest.mark.parametrize(("alpha", "size", "expected"), [(0.5, 13, 6), (1, 13, 13), (2, 13, 26)])
def test_poison_count_is_alpha_times_subpop_aux_size(alpha, size, expected):
    assert poison_count(alpha, size) == expected


def test_poison_points_copy_subpop_aux_rows_with_one_flipped_label(aux):
    members = np.zeros(20, bool)
    members[[0, 1, 2, 15]] = True  # three of class 0, one of class 1
    proba = np.full((20, 2), 0.5)
    poison = LabelFlip(alpha=2).poison(subpop(members), aux, proba, seed=0)
    assert len(poison) == 8 and poison.subpop_id == 3
    assert set(poison.source_index) <= {0, 1, 2, 15}
    assert np.array_equal(poison.x, aux.x[poison.source_index])
    assert set(poison.y) == {1}  # least frequent label among the subpopulation's aux points


def test_same_seed_same_poison(aux):
    members = np.ones(20, bool)
    proba = np.full((20, 2), 0.5)
    a, b = (LabelFlip(alpha=1).poison(subpop(members), aux, proba, seed=5) for _ in range(2))
    assert np.array_equal(a.source_index, b.source_index)
    assert len(np.unique(a.source_index)) < 20  # drawn with replacement


def test_max_loss_picks_the_class_the_model_finds_least_likely():
    proba = np.array([[0.1, 0.7, 0.2], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    assert flip_label("max_loss", np.array([1, 1, 1]), proba, 3) == 2
    assert flip_label("least_frequent", np.array([1, 1, 0]), proba, 3) == 2
