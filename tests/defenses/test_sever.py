"""SEVER's rounds on scripted scores (which rows each round drops, rows once dropped never
counted again, which fits start warm), its scores per victim from the victims' outputs, and
the gradient scores' edge cases (a class of one row, gradients equal to their class means)."""

from __future__ import annotations

import numpy as np
import pytest

from subpop_runner.defenses.sever import Sever, gradient_outlier_scores
from subpop_runner.training.victims import PENULTIMATE, PROBA
from tests.defenses.test_trim import Scripted


class ScriptedSever(Sever):
    """SEVER whose scores under fit ``n`` are ``script[n]``; records what each round saw."""

    def __init__(self, script: list[list[list[float]]], **settings) -> None:
        super().__init__(**settings)
        self.script, self.seen = script, []

    def scores(self, rows, victims, keep):
        self.seen.append((victims, [k.tolist() for k in keep]))
        return [np.array(s, float) for s in self.script[victims]]


SCRIPT = [
    [list(range(10)), [3.0, 2.0, 1.0, 0.0]],  # rows 9 and 8 go (20% of 10)
    [[50] + [0] * 7 + [100, 100], [0.0] * 4],  # row 0 (1 of 8); 8 and 9 are gone already
    [[99, 5] + [0] * 8, [0.0] * 4],  # row 1 (1 of 7)
]


@pytest.mark.parametrize(("warm", "starts"), [(False, [None, None, None]), (True, [0, 1, None])])
def test_sever_drops_a_share_of_the_rows_still_kept_each_round(warm, starts):
    rows = Scripted([[[0.0] * 10, [0.0] * 4]], budget=[0, 0])
    sever = ScriptedSever(SCRIPT, rounds=3, fraction=0.2, warm_start=warm)
    defended = sever(rows, victims=0)
    assert rows.starts == starts and defended.victims == 3
    assert [victims for victims, _ in sever.seen] == [0, 1, 2]
    assert sever.seen[1][1][0] == [True] * 8 + [False, False]
    assert np.flatnonzero(~defended.keep[0]).tolist() == [0, 1, 8, 9]
    assert defended.keep[1].all()  # 20% of 4 rows rounds down to none
    assert defended.rounds == [3, 3]
    assert [s.tolist() for s in defended.score] == SCRIPT[2]  # the last round's scores


class Outputs:
    """`TrainingRows` with given probabilities and penultimate outputs per victim."""

    def __init__(self, proba, hidden, labels) -> None:
        self.proba, self.hidden, self.labels, self.n_classes = proba, hidden, labels, 3

    def outputs(self, victims, what):
        return iter({PROBA: self.proba, PENULTIMATE: self.hidden}[what])


def test_sever_scores_each_victims_kept_rows_with_its_own_outputs_and_seed():
    rng = np.random.default_rng(1)
    proba = [rng.dirichlet([1, 1, 1], 30) for _ in range(2)]
    hidden = [rng.normal(size=(30, 4)) for _ in range(2)]
    labels = [rng.integers(0, 3, 30) for _ in range(2)]
    keep = [np.arange(30) % 5 > 0, np.ones(30, bool)]
    scores = Sever(iterations=3).scores(Outputs(proba, hidden, labels), None, keep)
    for v in range(2):
        k = keep[v]
        expected = gradient_outlier_scores(
            proba[v][k], hidden[v][k], labels[v][k], 3, iterations=3, seed=v
        )
        np.testing.assert_array_equal(scores[v][k], expected)
        assert (scores[v][~k] == 0).all() and len(scores[v]) == 30


def test_sever_scores_a_class_of_one_row_zero_and_gradients_at_their_means_zero():
    """A class's lone row is its own mean (centred gradient 0); rows whose gradients all equal
    their class's mean leave nothing to stand out (no division by a zero norm)."""
    rng = np.random.default_rng(0)
    proba = rng.dirichlet([1, 1, 1], 21)
    hidden = rng.normal(size=(21, 2))
    labels = np.r_[np.zeros(10, int), np.ones(10, int), 2]
    scores = gradient_outlier_scores(proba, hidden, labels, 3)
    assert scores[-1] == pytest.approx(0, abs=1e-12) and scores[:20].max() > 0.01
    same_proba = np.repeat([[0.5, 0.25, 0.25], [0.125, 0.75, 0.125]], 5, axis=0)
    same_hidden = np.repeat([[1.0, -2.0], [0.5, 4.0]], 5, axis=0)
    flat = gradient_outlier_scores(same_proba, same_hidden, np.repeat([0, 1], 5), 3)
    assert flat.tolist() == [0.0] * 10
