"""Fine-pruning by hand: where pruning stops (a drop of exactly ``max_drop`` is allowed), the
order among units of equal mean activation, fine-tuning's first Adam step, the holdout's size,
what a defended victim's last layers are and what its details report."""

from __future__ import annotations

import numpy as np
import pytest

from subpop_runner.defenses.fine_pruning import FinePruning, fine_tune, predicted, prune
from subpop_runner.errors import ConfigError
from subpop_runner.training.victims import PENULTIMATE
from tests.victims import declared


def four_rows():
    """Unit 0 (mean 0.25) decides row 3 alone, unit 1 (mean 1) the other three rows."""
    hidden = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    labels = np.array([1, 1, 1, 0])
    weights = np.array([[3.0, 0.0], [0.0, 1.0]])  # class 0 reads unit 0, class 1 unit 1
    return hidden, labels, weights, np.zeros(2)


def test_pruning_may_cost_exactly_max_drop_and_stops_at_the_unit_that_costs_more():
    hidden, labels, weights, bias = four_rows()
    mask, accuracy = prune(hidden, labels, weights, bias, max_drop=0.25)
    assert mask.tolist() == [0.0, 1.0] and accuracy == (1.0, 0.75)
    mask, accuracy = prune(hidden, labels, weights, bias, max_drop=0.2)
    assert mask.tolist() == [1.0, 1.0] and accuracy == (1.0, 1.0)
    mask, accuracy = prune(hidden, labels, weights, bias, max_drop=1.0)
    assert mask.tolist() == [0.0, 0.0] and accuracy == (1.0, 0.25)


def test_units_of_equal_mean_activation_are_pruned_in_their_order():
    """20 units: the even ones always fire (mean 1, no weight), the odd ones have mean 0: all
    never fire but unit 9, which carries the task (+1 / −1). Pruning goes lowest mean first,
    ties in unit order, and stops at unit 9: units 1, 3, 5, 7 go, the rest stay."""
    labels = np.arange(40) % 2
    hidden = np.zeros((40, 20))
    hidden[:, ::2] = 1.0
    hidden[:, 9] = np.where(labels == 1, 1.0, -1.0)
    weights = np.zeros((2, 20))
    weights[1, 9] = 1.0
    mask, accuracy = prune(hidden, labels, weights, np.zeros(2), max_drop=0.04)
    assert np.flatnonzero(mask == 0).tolist() == [1, 3, 5, 7] and accuracy == (1.0, 1.0)


def test_a_prediction_is_the_most_likely_class_of_each_row():
    assert predicted(np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])).tolist() == [1, 0]
    assert predicted(np.array([[-1.0], [2.0]])).tolist() == [0, 1]  # one logistic output
    # The bias counts: with no unit firing it alone decides.
    _, accuracy = prune(np.zeros((2, 1)), np.array([1, 1]), np.zeros((2, 1)), [0, 1], 0.0)
    assert accuracy == (1.0, 1.0)


@pytest.mark.parametrize("n_classes", [1, 2, 3])
def test_fine_tuning_takes_adam_steps_of_the_learning_rate_down_the_holdout_loss(n_classes):
    """From zero weights Adam's first step moves each parameter by the learning rate against
    the sign of its gradient: for the logistic output, (σ(0) − y)·h averaged; for softmax,
    (1/C − [y = c])·h averaged."""
    hidden = np.array([[1.0, 2.0], [2.0, -1.0], [-1.0, 0.5], [0.5, 3.0]], np.float32)
    labels = np.array([1, 0, 1, 1]) if n_classes < 3 else np.array([2, 0, 1, 2])
    outputs = max(n_classes, 1)
    weights, bias = np.zeros((outputs, 2)), np.zeros(outputs)
    tuned_w, tuned_b = fine_tune(hidden, labels, weights, bias, epochs=1, learning_rate=0.05)
    if n_classes == 1:
        residual = (0.5 - labels)[:, None]
    else:
        residual = 1 / outputs - np.eye(outputs)[labels]
    expected_w = -0.05 * np.sign(residual.T @ hidden)
    expected_b = -0.05 * np.sign(residual.sum(0))
    np.testing.assert_allclose(tuned_w, expected_w, rtol=1e-5)
    np.testing.assert_allclose(tuned_b, expected_b, rtol=1e-5)
    many, _ = fine_tune(hidden, labels, weights, bias, epochs=3, learning_rate=0.05)
    assert not np.allclose(many, tuned_w)  # every epoch is a step


def test_the_holdout_is_a_rounded_share_of_the_test_part_and_at_least_one_row():
    assert len(FinePruning(holdout_fraction=0.35).holdout(10, seed=0)) == 4  # 3.5 rounds up
    assert len(FinePruning(holdout_fraction=0.01).holdout(10, seed=0)) == 1
    # Pinned: the defender's rows are a seeded draw of their own (not the split's stream),
    # sorted; a change to the draw moves every fine-pruning number.
    assert FinePruning(holdout_fraction=0.2).holdout(20, seed=4).tolist() == [1, 5, 18, 19]


def test_fine_pruning_refuses_only_a_model_that_says_it_has_nothing_to_prune():
    FinePruning().check(10, regime=declared())  # a regime that does not say: prunable
    with pytest.raises(ConfigError, match=r"^defense=fine_pruning: ") as error:
        FinePruning().check(10, declared(prunable=False))
    assert str(error.value).endswith("layer (model=mlp, a backbone's *_ll, conv, *_ft)")


class Layered:
    """Victims given by their penultimate function and last layers."""

    device = "cpu"

    def __init__(self, layers) -> None:
        self.layers = layers

    def representation(self, x, layer):
        assert layer == PENULTIMATE
        return np.stack([x] * len(self.layers))

    def last_layer(self):
        return self.layers


class Holdout:
    """`TrainingRows` with a holdout."""

    def __init__(self, holdout, n_rows: list[int]) -> None:
        self.holdout = holdout
        self.labels = [np.arange(n) % 2 for n in n_rows]
        self.n_classes = 2

    def __len__(self) -> int:
        return len(self.labels)


def test_fine_pruning_prunes_then_tunes_each_victims_last_layer_and_reports_it():
    hidden, labels, weights, bias = four_rows()
    hidden, weights = np.c_[hidden, np.zeros(4)], np.c_[weights, [1.0, -1.0]]  # + a dead unit
    layers = [(weights, bias), (2 * weights, bias + 1)]
    rows = Holdout((hidden, labels), [5, 3])
    defended = FinePruning(max_drop=0.25, epochs=3, learning_rate=0.1)(rows, Layered(layers))
    masks = [np.array([0.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0])]
    for v, ((w, b), mask) in enumerate(zip(layers, masks, strict=True)):
        pruned_w, pruned_b = defended.stages["pruned"].last_layer()[v]
        np.testing.assert_array_equal(pruned_w, w * mask)
        np.testing.assert_array_equal(pruned_b, b)
        tuned_w, tuned_b = fine_tune(hidden * mask, labels, w * mask, b, 3, 0.1)
        got_w, got_b = defended.victims.last_layer()[v]
        np.testing.assert_array_equal(got_w, tuned_w * mask)
        np.testing.assert_array_equal(got_b, tuned_b)
        assert defended.details[v] == {
            "all": {
                "pruned_units": 2,
                "units": 3,
                "holdout_accuracy_before": 1.0,
                "holdout_accuracy_pruned": 0.75,
                "holdout_rows": 4,
            }
        }
    assert [k.tolist() for k in defended.keep] == [[True] * 5, [True] * 3]
    assert [s.tolist() for s in defended.score] == [[0.0] * 5, [0.0] * 3]
    assert defended.rounds == [0, 0]
