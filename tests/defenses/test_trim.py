"""TRIM's rounds (Algorithm 4) on scripted losses: which rows each round keeps, when it stops,
how rounds are counted per victim, which fits start warm, and its settings' checks."""

from __future__ import annotations

import numpy as np
import pytest

from subpop_runner.defenses.trim import Trim
from subpop_runner.errors import ConfigError


class Scripted:
    """`TrainingRows` whose victims are the number of fits so far (0: the undefended ones)
    and whose per-row losses under fit ``n`` are ``script[n]`` (the last entry after that)."""

    def __init__(self, script: list[list[list[float]]], budget: list[int]) -> None:
        self.script = [[np.array(s, float) for s in fit] for fit in script]
        self.labels = [np.arange(len(s)) % 2 for s in self.script[0]]
        self.n_classes, self.removal_budget = 2, budget
        self.starts: list[int | None] = []
        self.kept: list[list[np.ndarray]] = []

    def __len__(self) -> int:
        return len(self.labels)

    def losses(self, victims: int):
        return iter(self.script[min(victims, len(self.script) - 1)])

    def train(self, keep, start=None) -> int:
        self.starts.append(start)
        self.kept.append([k.copy() for k in keep])
        return len(self.starts)


def alternating() -> Scripted:
    """Victim 0 (4 rows, m = 1): each fit blames the row the previous one kept; victim 1
    (4 rows, m = 1): row 1 always has the highest loss."""
    steady = [0.0, 2.0, 1.0, 0.5]
    return Scripted(
        [
            [[0, 0, 0, 1], steady],
            [[1, 0, 0, 0], steady],
            [[0, 0, 0, 1], steady],
            [[0.5, 0, 0, 0.25], [0.1, 0.2, 0.3, 0.4]],
        ],
        budget=[1, 1],
    )


@pytest.mark.parametrize(("warm", "starts"), [(False, [None, None, None]), (True, [0, 1, None])])
def test_trim_that_never_settles_stops_after_its_rounds_the_last_fit_from_scratch(warm, starts):
    rows = alternating()
    defended = Trim(rounds=3, warm_start=warm)(rows, victims=0)
    assert rows.starts == starts  # no fit after the last round: it was the final one
    assert defended.victims == 3
    assert [k.tolist() for k in defended.keep] == [[True] * 3 + [False], [True, False, True, True]]
    assert defended.rounds == [3, 1]  # victim 1's kept rows changed once
    assert [s.tolist() for s in defended.score] == [[0.5, 0, 0, 0.25], [0.1, 0.2, 0.3, 0.4]]
    assert [k.tolist() for k in rows.kept[1]] == [[False] + [True] * 3, [True, False, True, True]]


def test_trim_stops_once_the_kept_rows_settle_and_refits_a_warm_round_from_scratch():
    script = [[[5.0, 1.0, 4.0, 2.0, 3.0], [1.0, 2.0, 3.0]]]
    cold, warm = Scripted(script, [2, 0]), Scripted(script, [2, 0])
    defended = Trim()(cold, victims=0)
    assert cold.starts == [None]  # round 2 proposed the same rows: no second fit
    assert [k.tolist() for k in defended.keep] == [[False, True, False, True, True], [True] * 3]
    assert defended.rounds == [1, 0] and defended.victims == 1
    defended = Trim(warm_start=True)(warm, victims=0)
    assert warm.starts == [0, None] and defended.victims == 2  # the final fit, from scratch
    assert defended.rounds == [1, 0]


def test_trim_with_nothing_to_remove_returns_the_undefended_victims_untouched():
    rows = Scripted([[[1.0, 2.0], [3.0, 1.0]]], [0, 0])
    defended = Trim(warm_start=True)(rows, victims=0)
    assert rows.starts == [] and defended.victims == 0 and defended.rounds == [0, 0]
    assert [s.tolist() for s in defended.score] == [[1.0, 2.0], [3.0, 1.0]]


def test_trim_removes_m_a_fraction_or_the_told_budget():
    rows = Scripted([[[0.0] * 10, [0.0] * 25]], [3, 0])
    assert Trim(m=4).removals(rows) == [4, 4]
    assert Trim(fraction=0.2).removals(rows) == [2, 5]
    assert Trim().removals(rows) == [3, 0]
    # Only the told budget is the paper's oracle, and the run says so.
    assert Trim().logged_params() == {"defense.oracle_m": "true"}
    assert Trim(m=4).logged_params() == Trim(fraction=0.2).logged_params()
    assert Trim(m=4).logged_params() == {"defense.oracle_m": "false"}


def test_trim_refuses_an_m_that_leaves_nothing_to_train_on():
    Trim(m=99).check(100, regime=object())
    Trim().check(100, regime=object())
    with pytest.raises(ConfigError, match=r"^defense\.m: 100 removals of a 100-row training") as e:
        Trim(m=100).check(100, regime=object())
    assert str(e.value).endswith(
        "valid: an integer < the training set, or null (the poison count)"
    )

    class Warm:
        warm_start = True

    Trim(warm_start=True).check(100, Warm())  # and the checks every defense makes
