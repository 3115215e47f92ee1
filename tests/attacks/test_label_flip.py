import numpy as np
import pytest

from subpop_runner.attacks.label_flip import LabelFlip, flip_label, poison_count
from subpop_runner.types import Part, PoisonSet, Subpopulation


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
    poison = LabelFlip(alpha=2).poison(subpop(members), aux, 2, seed=0)
    assert len(poison) == 8 and poison.subpop_id == 3
    assert set(poison.source_index) <= {0, 1, 2, 15}
    assert np.array_equal(poison.x, aux.x[poison.source_index])
    assert set(poison.y) == {1}  # least frequent label among the subpopulation's aux points


def test_same_seed_same_poison(aux):
    members = np.ones(20, bool)
    a, b = (LabelFlip(alpha=1).poison(subpop(members), aux, 2, seed=5) for _ in range(2))
    assert np.array_equal(a.source_index, b.source_index)
    assert len(np.unique(a.source_index)) < 20  # drawn with replacement


def test_max_loss_picks_the_class_the_model_finds_least_likely():
    proba = np.array([[0.1, 0.7, 0.2], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    assert flip_label("max_loss", np.array([1, 1, 1]), 3, proba) == 2
    assert flip_label("least_frequent", np.array([1, 1, 0]), 3) == 2


def test_poison_count_follows_the_subpops_aux_size_not_train_or_test(aux):
    members = np.zeros(20, bool)
    members[:5] = True
    train, test = np.zeros(30, bool), np.zeros(10, bool)
    train[:9], test[:2] = True, True
    subpop = Subpopulation(id=1, description="", aux=members, train=train, test=test)
    assert len(LabelFlip(alpha=1).poison(subpop, aux, 2, seed=0)) == 5
    assert len(LabelFlip(alpha=0.5).poison(subpop, aux, 2, seed=0)) == 2


@pytest.mark.parametrize(("rule", "label"), [("least_frequent", 0), ("max_loss", 1)])
def test_flip_label_is_decided_by_the_subpops_own_aux_points(aux, rule, label):
    """Both rules are asked where they disagree, and where the whole aux set would decide
    the other way: aux as a whole has fewer 1s, and the model finds 0 unlikely there."""
    members = np.zeros(20, bool)
    members[[0, *range(14, 20)]] = True  # one of class 0, six of class 1
    proba = np.tile([0.1, 0.9], (20, 1))
    proba[members] = [0.9, 0.1]  # on the subpopulation, class 1 is the unlikely one
    poison = LabelFlip(alpha=1, label_rule=rule).poison(subpop(members), aux, 2, 0, proba)
    assert set(poison.y) == {label}


def test_max_loss_tells_certain_wrong_labels_apart_by_their_other_rows():
    """Probabilities of exactly 0 (a confident model) count as 1e-12, so two labels the model
    rules out once are told apart by the rest: label 2 is the less likely one."""
    proba = np.array([[0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [0.8, 0.19, 0.01]])
    assert flip_label("max_loss", np.zeros(3, int), 3, proba) == 2


def test_a_label_flip_attack_needs_the_attackers_model_only_for_max_loss():
    assert LabelFlip(label_rule="max_loss").uses_model
    assert not LabelFlip().uses_model


def test_label_flips_optimisation_step_leaves_its_poisons_as_they_are():
    sets = [PoisonSet(0, np.ones((2, 3)), np.array([1, 0]), np.array([4, 7]))]
    optimized = LabelFlip().optimize(sets, [], None, None, None)
    assert optimized.poison_sets == sets and optimized.poison_sets[0] is sets[0]
    assert optimized.trace.empty and list(optimized.trace) == ["subpop_id", "step", "objective"]
