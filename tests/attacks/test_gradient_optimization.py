"""GO worked by hand on an attacker whose head is zero: every probability is 1/2, so a row's
last-layer gradient is r ⊗ (x, 1) with r = ±(1/2, −1/2), and the objectives, their gradients
in the inputs and Adam's first step (the learning rate times a sign) all have closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from subpop_runner.attacks.domain import InputDomain
from subpop_runner.attacks.gradient_optimization import GradientOptimization
from subpop_runner.attacks.optimization import Job
from subpop_runner.errors import ConfigError
from subpop_runner.selectors.base import Subpopulation
from subpop_runner.training.differentiable import Differentiable
from subpop_runner.types import Part, PoisonSet
from tests.victims import declared

# Aux rows: S_A's targets are rows 0-1, S_B's rows 2-3.
AUX = Part(
    np.array([[1, 2], [3, 0], [-1, 1], [1, -3], [5, 5]], np.float32), np.array([1, 0, 1, 1, 0])
)
SUBPOPS = [
    Subpopulation(0, "A", np.arange(5) < 2, np.zeros(3, bool), np.zeros(3, bool)),
    Subpopulation(
        1, "B", (np.arange(5) >= 2) & (np.arange(5) < 4), np.zeros(3, bool), np.zeros(3, bool)
    ),
    Subpopulation(2, "C", np.arange(5) == 4, np.zeros(3, bool), np.zeros(3, bool)),
]
POISONS = [
    PoisonSet(0, np.array([[0, 1], [2, 3]], np.float32), np.array([1, 1]), np.array([0, 1])),
    PoisonSet(1, np.array([[1, 1], [0, -1], [2, 2]], np.float32), np.zeros(3, int), np.arange(3)),
    PoisonSet(2, np.zeros((0, 2), np.float32), np.zeros(0, int), np.zeros(0, int)),
]


class ZeroHead:
    """An attacker whose one victim is a zero linear head on its 2-D input."""

    def differentiable(self, v: int) -> Differentiable:
        assert v == 0
        head = torch.nn.Linear(2, 2)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        return Differentiable(torch.nn.Identity(), head)


def objective(poison_mean, target_mean) -> float:
    """The inner objective of poisons and targets under the poisons' label: |r|²·(x̄_P·x̄_T + 1)
    with |r|² = 1/2."""
    return 0.5 * (float(np.dot(poison_mean, target_mean)) + 1)


def test_go_takes_adam_steps_up_the_objective_in_the_box_and_traces_it():
    domain = InputDomain(torch.tensor([-10.0, -10.0]), torch.tensor([2.05, 10.0]))
    attack = GradientOptimization(steps=1, lr=0.1)
    result = attack.optimize(POISONS, SUBPOPS, ZeroHead(), AUX, domain)
    moved = [p.x for p in result.poison_sets]
    # S_A: x̄_T = (2, 1): both coordinates up by 0.1, the second row's first one clamped.
    np.testing.assert_allclose(moved[0], [[0.1, 1.1], [2.05, 3.1]], rtol=1e-6)
    # S_B: x̄_T = (0, −1): the first coordinate has no gradient, the second goes down.
    np.testing.assert_allclose(moved[1], [[1, 0.9], [0, -1.1], [2, 1.9]], rtol=1e-6)
    assert moved[0].dtype == np.float32
    assert result.poison_sets[2] is POISONS[2]  # nothing to move
    for before, after in zip(POISONS, result.poison_sets, strict=True):
        assert after.subpop_id == before.subpop_id
        np.testing.assert_array_equal(after.y, before.y)
        np.testing.assert_array_equal(after.source_index, before.source_index)
    trace = result.trace
    assert trace.index.tolist() == [0, 1, 2, 3]
    assert trace["subpop_id"].tolist() == [0, 0, 1, 1] and trace["step"].tolist() == [0, 1, 0, 1]
    expected = [
        objective([1, 2], [2, 1]),
        objective([1.075, 2.1], [2, 1]),
        objective([1, 2 / 3], [0, -1]),
        objective([1, 2 / 3 - 0.1], [0, -1]),
    ]
    np.testing.assert_allclose(trace["objective"], expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("similarity", "target_label", "expected"),
    [
        ("inner", "poison", [2.5, 1 / 6]),
        # S_A's targets: one of the poisons' label, one not: −|r|²·x̄_P·mean(±x_t) = −1/2.
        ("inner", "true", [-0.5, 1 / 6]),
        # (x̄_P·x̄_T + 1) / (√(|x̄_P|² + 1)·√(|x̄_T|² + 1)): |r|² cancels.
        ("cosine", "poison", [5 / 6, (1 / 3) / np.sqrt(1 + 4 / 9 + 1) / np.sqrt(2)]),
    ],
)
def test_gos_objective_for_each_similarity_and_target_label(similarity, target_label, expected):
    attack = GradientOptimization(steps=0, similarity=similarity, target_label=target_label)
    domain = InputDomain(torch.full((2,), -10.0), torch.full((2,), 10.0))
    result = attack.optimize(POISONS[:2], SUBPOPS[:2], ZeroHead(), AUX, domain)
    np.testing.assert_allclose(result.trace["objective"], expected, rtol=1e-5)
    for before, after in zip(POISONS[:2], result.poison_sets, strict=True):
        np.testing.assert_array_equal(after.x, before.x)  # no step taken


def test_no_poison_to_move_gives_an_empty_trace_with_its_columns():
    domain = InputDomain(torch.zeros(2), torch.ones(2))
    result = GradientOptimization().optimize(POISONS[2:], SUBPOPS[2:], ZeroHead(), AUX, domain)
    assert result.poison_sets == POISONS[2:]
    assert list(result.trace.columns) == ["subpop_id", "step", "objective"]
    assert result.trace.empty


def job(size: int) -> Job:
    x = np.zeros((size, 2), np.float32)
    return Job(PoisonSet(size, x, np.zeros(size, int), np.arange(size)), None, None, None)


def test_go_batches_consecutive_subpopulations_up_to_batch_rows_poisons():
    jobs = [job(3), job(2), job(4), job(1), job(6)]

    def sizes(batch_rows: int) -> list[list[int]]:
        batches = GradientOptimization(batch_rows=batch_rows).groups(jobs)
        return [[len(j.poison) for j in group] for group in batches]

    assert sizes(5) == [[3, 2], [4, 1], [6]]  # 5 poisons fit; a set over the limit goes alone
    assert sizes(4) == [[3], [2], [4], [1], [6]]
    assert sizes(100) == [[3, 2, 4, 1, 6]]


def test_the_similarities_are_the_inner_product_and_the_cosine():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
    assert float(GradientOptimization().similar(a, b)) == 11.0
    cosine = float(GradientOptimization(similarity="cosine").similar(a, b))
    assert cosine == pytest.approx(11 / (np.sqrt(5) * 5))


class Splits2D:
    vocabulary = None  # not text


def test_an_attack_needing_gradients_names_the_model_that_has_none():
    with pytest.raises(ConfigError, match=r"^attack=gradient_optimization: ") as error:
        GradientOptimization().check(Splits2D(), declared("Fitted", gradients=False))
    assert "(Fitted)" in str(error.value) and str(error.value).endswith("or attack=label_flip")
    with pytest.raises(ConfigError, match="no gradients"):
        GradientOptimization().check(Splits2D(), declared())  # one that declares none
    GradientOptimization().check(Splits2D(), declared(gradients=True))


def test_a_subpopulation_with_one_poison_point_is_moved_like_the_others():
    """S_C's one target (5, 5) and one poison (1, 1), both of label 0."""
    one = [POISONS[0], POISONS[1], PoisonSet(2, np.ones((1, 2), np.float32), [0], [4])]
    domain = InputDomain(torch.full((2,), -10.0), torch.full((2,), 10.0))
    result = GradientOptimization(steps=1, lr=0.1).optimize(one, SUBPOPS, ZeroHead(), AUX, domain)
    trace = result.trace[result.trace["subpop_id"] == 2]
    np.testing.assert_allclose(trace["objective"].iloc[0], objective([1, 1], [5, 5]), rtol=1e-6)
    np.testing.assert_allclose(result.poison_sets[2].x, [[1.1, 1.1]], rtol=1e-6)
