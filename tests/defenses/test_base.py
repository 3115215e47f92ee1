"""What every defense shares (`defenses/base.py`), on hand-made rows: the content order a
defense sees and its way back, the mask keeping the lowest scores, each class's kept rows, the
warm-start rule, and the check that a defense leaves every class a row to learn from."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from subpop_runner.defenses.base import (
    Defended,
    Defense,
    DefenseError,
    RowOrder,
    content_keys,
    keep_lowest,
    per_class,
)
from subpop_runner.defenses.none import NoDefense
from subpop_runner.errors import ConfigError
from subpop_runner.training.victims import PENULTIMATE, PROBA
from tests.victims import LinearVictims, declared


def test_keep_lowest_drops_the_highest_scores_and_the_later_row_of_a_tie():
    scores = np.array([3.0, 1.0, 3.0, 2.0])
    assert keep_lowest(scores, 0).tolist() == [True, True, True, True]
    assert keep_lowest(scores, 1).tolist() == [True, True, False, True]
    assert keep_lowest(scores, 2).tolist() == [False, True, False, True]
    assert keep_lowest(scores, 4).dtype == bool and not keep_lowest(scores, 4).any()
    # Many ties (a sort that is not stable reorders them): the last three 2s go.
    tied = np.tile([0.0, 1.0, 2.0], 6)
    assert np.flatnonzero(~keep_lowest(tied, 3)).tolist() == [11, 14, 17]


def test_per_class_gives_each_class_its_kept_rows_and_skips_a_class_with_none():
    labels = np.array([0, 1, 0, 2, 1])
    keep = np.array([True, True, False, True, False])
    assert [rows.tolist() for rows in per_class(labels, keep, 4)] == [[0], [1], [3]]


def blake(row: bytes, label: int, seed: int) -> int:
    key = np.int64(seed).tobytes()
    digest = hashlib.blake2b(row + np.int64(label).tobytes(), digest_size=8, key=key).digest()
    return int.from_bytes(digest, "little")


def test_content_keys_are_a_seeded_hash_of_each_rows_values_and_label():
    x = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]], np.float32)
    y = np.array([0, 1, 0], np.int32)  # hashed as int64, whatever the labels' dtype
    keys = content_keys(x, y, seed=5)
    assert keys.dtype == np.uint64
    assert keys.tolist() == [
        blake(row.tobytes(), label, 5) for row, label in zip(x, y, strict=True)
    ]
    assert keys[0] != keys[1]  # the same values with another label
    assert content_keys(x, y, seed=6)[0] != keys[0]
    # Poison rows in another dtype hash like the train rows they are told to be like.
    assert content_keys(x.astype(np.float64), y, 5, like=x).tolist() == keys.tolist()
    assert content_keys(x.astype(np.float64), y, 5).tolist() != keys.tolist()
    images = np.arange(24, dtype=np.float32).reshape(2, 2, 2, 3)
    assert content_keys(images, np.array([1, 0]), 5)[1] == blake(images[1].tobytes(), 0, 5)
    assert content_keys(images[:0], np.zeros(0, int), 5).shape == (0,)  # an empty poison set


def shared_and_own() -> tuple[tuple[np.ndarray, np.ndarray], list]:
    """20 shared rows (one repeated 3 times), victim 0's 10 rows (float32, two of them copies
    of a shared row), victim 1's none."""
    rng = np.random.default_rng(0)
    shared_x = rng.normal(size=(20, 2))
    shared_x[17:] = shared_x[16]
    shared_y = rng.integers(0, 2, 20)
    shared_y[17:] = shared_y[16]
    own_x = rng.normal(size=(10, 2)).astype(np.float32)
    own_x[:2] = shared_x[3].astype(np.float32)
    shared_x[3] = own_x[0]  # exactly representable in both dtypes
    own_y = rng.integers(0, 2, 10)
    own_y[:2] = shared_y[3]
    empty = (np.zeros((0, 2), np.float32), np.zeros(0, np.int64))
    return (shared_x, shared_y), [(own_x, own_y), empty]


def test_a_defense_sees_the_rows_in_key_order_and_its_masks_go_back_in_training_order():
    shared, own = shared_and_own()
    order = RowOrder(shared, own, seed=3)
    rows = order.view(2, removal_budget=[10, 0], train=None, holdout=("x", "y"))
    assert (rows.n_classes, rows.removal_budget, rows.holdout) == (2, [10, 0], ("x", "y"))
    for v, (x, y) in enumerate(own):
        every_x, every_y = np.r_[shared[0], x], np.r_[shared[1], y]
        keys = content_keys(every_x, every_y, 3)
        where = order.in_training_order([np.arange(30), np.arange(20)])[v]
        assert sorted(where.tolist()) == list(range(len(every_y)))  # a permutation
        seen = np.empty_like(keys)
        seen[where] = keys
        assert seen.tolist() == sorted(seen.tolist())  # sorted by key
        np.testing.assert_array_equal(rows.labels[v][where], every_y)
    # Identical rows tie; the same seed breaks the ties the same way.
    again = RowOrder(shared, own, seed=3).in_training_order([np.arange(30), np.arange(20)])
    first = order.in_training_order([np.arange(30), np.arange(20)])
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_a_defense_reads_victims_outputs_and_trains_in_its_order():
    shared, own = shared_and_own()
    every = [(np.r_[shared[0], x], np.r_[shared[1], y]) for x, y in own]
    victims = LinearVictims.fit(every)
    calls = []

    def train(keep, **start):
        calls.append((keep, start))
        return "trained"

    order = RowOrder(shared, own, seed=3)
    rows = order.view(2, removal_budget=[10, 0], train=train)
    where = order.in_training_order([np.arange(30), np.arange(20)])
    for v, ((x, y), proba, hidden, loss) in enumerate(
        zip(
            every,
            rows.outputs(victims, PROBA),
            rows.outputs(victims, PENULTIMATE),
            rows.losses(victims),
            strict=True,
        )
    ):
        np.testing.assert_allclose(proba[where[v]], victims.predict_proba(x)[v])
        np.testing.assert_allclose(hidden[where[v]], x)
        by_hand = -np.log(victims.predict_proba(x)[v][np.arange(len(y)), y])
        np.testing.assert_allclose(loss[where[v]], by_hand)
    masks = [np.arange(30) % 3 > 0, np.arange(20) % 2 > 0]
    assert rows.train(masks) == "trained"
    assert calls[-1][1] == {}  # no start: the caller's own default
    for got, want in zip(calls[-1][0], order.in_training_order(masks), strict=True):
        np.testing.assert_array_equal(got, want)
    rows.train(masks, start="victims")
    assert calls[-1][1] == {"start": "victims"}
    np.testing.assert_array_equal(calls[-1][0][0], order.in_training_order(masks)[0])


def test_a_relabelled_row_trains_under_its_new_label_and_its_original_is_left_out():
    """Victim 0 relabels one shared row and one of its own (in the defense's order), drops
    another row and keeps the rest; victim 1 changes nothing. The trainer gets the kept rows
    less the relabelled ones, and those two rows under their new labels (inputs as they are)."""
    shared, own = shared_and_own()
    calls = []

    def train(keep, relabeled, **start):
        calls.append((keep, relabeled, start))
        return "trained"

    order = RowOrder(shared, own, seed=3)
    rows = order.view(2, removal_budget=[0, 0], train=train)
    where = order.in_training_order([np.arange(30), np.arange(20)])
    shared_row, own_row, dropped = (int(where[0][t]) for t in (5, 24, 8))  # training rows
    labels = [rows.labels[0].copy(), rows.labels[1].copy()]
    labels[0][[shared_row, own_row]] = 1 - labels[0][[shared_row, own_row]]
    keep = [np.ones(30, bool), np.ones(20, bool)]
    keep[0][dropped] = False
    assert rows.train(keep, start="victims", labels=labels) == "trained"
    ((kept, relabeled, start),) = calls
    assert start == {"start": "victims"}
    assert np.flatnonzero(~kept[0]).tolist() == [5, 8, 24] and kept[1].all()
    x, y = relabeled[0]
    by_position = {
        shared_row: (shared[0][5], 1 - shared[1][5]),
        own_row: (own[0][0][4], 1 - own[0][1][4]),
    }
    for got_x, got_y, position in zip(x, y, sorted(by_position), strict=True):
        want_x, want_y = by_position[position]
        np.testing.assert_array_equal(got_x, want_x)
        assert got_y == want_y
    assert x.dtype == shared[0].dtype and len(relabeled[1][0]) == len(relabeled[1][1]) == 0


def test_a_defense_declares_no_holdout_and_no_extra_parameters_by_default():
    plain = Given([])
    assert plain.holdout(100, seed=0).shape == (0,) and plain.holdout(100, 0).dtype == np.int64
    assert plain.logged_params() == {}


class Given(Defense):
    """Keeps the rows it is given."""

    def __init__(self, keep: list[np.ndarray], warm_start: bool = False) -> None:
        self.keep, self.warm_start = keep, warm_start

    def defend(self, rows, victims) -> Defended:
        scores = [np.zeros(len(labels)) for labels in rows.labels]
        return Defended(self.keep, scores, [0] * len(self.keep), victims)


class Rows:
    """What `Defense` reads of `TrainingRows`: labels, class count, ``train``."""

    def __init__(self, labels: list[np.ndarray], n_classes: int) -> None:
        self.labels, self.n_classes, self.calls = labels, n_classes, []

    def train(self, keep, start=None):
        self.calls.append((keep, start))
        return "retrained"


def test_a_defense_that_empties_a_class_is_refused_and_one_that_does_not_is_timed():
    labels = [np.array([0, 0, 1, 1]), np.array([0, 1])]  # 3 classes, class 2 in no row
    rows = Rows(labels, 3)
    fine = Given([np.array([True, False, False, True]), np.array([True, True])])(rows, "v")
    assert 0 <= fine.seconds < 60 and fine.victims == "v"
    with pytest.raises(DefenseError, match=r"every training row of class\(es\) \[1\]") as error:
        Given([np.array([True, True, False, False]), np.array([True, True])])(rows, "v")
    assert "loosen its threshold" in str(error.value) and isinstance(error.value, ConfigError)


def test_a_warm_start_needs_a_regime_that_declares_one():
    warm = Given([], warm_start=True)
    warm.check(10, declared(warm_start=True))
    Given([]).check(10, declared())  # no warm start asked: any regime
    for regime in (declared(), declared(warm_start=False)):
        with pytest.raises(ConfigError, match=r"^defense\.warm_start:") as error:
            warm.check(10, regime)
        assert str(error.value).endswith("; set defense.warm_start=false")


def test_only_a_warm_defenses_intermediate_rounds_start_from_the_victims_they_replace():
    rows = Rows([np.array([0, 1])], 2)
    keep = [np.array([True, True])]
    warm, cold = Given(keep, warm_start=True), Given(keep)
    assert warm.retrain(rows, keep, "old", final=False) == "retrained"
    warm.retrain(rows, keep, "old")  # the final fit by default
    warm.retrain(rows, keep, "old", final=True)
    cold.retrain(rows, keep, "old", final=False)
    assert [start for _, start in rows.calls] == ["old", None, None, None]
    assert all(kept is keep for kept, _ in rows.calls)


def test_no_defense_keeps_every_row_and_measures_the_undefended_victims_only():
    shared, own = shared_and_own()
    rows = RowOrder(shared, own, seed=3).view(2, removal_budget=[0, 0], train=None)
    defended = NoDefense().defend(rows, "undefended")
    assert [k.tolist() for k in defended.keep] == [[True] * 30, [True] * 20]
    assert [s.tolist() for s in defended.score] == [[0.0] * 30, [0.0] * 20]
    assert defended.rounds == [0, 0] and defended.victims == "undefended"
    assert not defended.changed and defended.measured == {}
