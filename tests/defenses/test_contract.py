"""The defense contract, tested by behaviour: a defense cannot tell poison rows from clean ones.

Every option in conf/defense meets the same rows twice, split differently into "train" (shared
by every victim) and "poison" (a victim's own): what it keeps, its scores and the victims it
ends with must not change. Only the removal budget, the one piece of provenance the paper's
best-case defender is told (TRIM's true poison count), is held fixed between the two.

The victims here depend on the content of their rows alone (fixed random ReLU features and a
ridge last layer fitted in closed form on their rows, sorted), so any difference comes from
the defense, not from the learner.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import subpop_runner.schema  # noqa: F401  (registers the config schemas)
from subpop_runner.defenses.base import Defended, RowOrder, TrainingRows
from subpop_runner.training.victims import Victims
from tests.victims import ContentVictims

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = sorted(p.stem for p in (ROOT / "conf" / "defense").glob("*.yaml"))


def planted_rows() -> tuple[tuple[np.ndarray, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """120 shared rows in two blobs; victim 0's own rows are 16 label-flipped class-1 points
    drawn with replacement (exact duplicates among them) and one copy of a shared row, victim
    1's two clean rows."""
    rng = np.random.default_rng(0)
    y = np.arange(120) % 2
    x = 3.0 * y[:, None] + rng.normal(0, 0.6, (120, 2))
    drawn = rng.choice(np.flatnonzero(y == 1), 16, replace=True)
    poison = (np.r_[x[drawn], x[:1]], np.r_[np.zeros(16, int), y[:1]])
    clean = (3.0 * np.array([[0.0], [1.0]]) + rng.normal(0, 0.6, (2, 2)), np.array([0, 1]))
    return (x, y), [poison, clean]


def moved_to_own(shared, own, seed: int):
    """The same rows of every victim, with a random half of the shared rows moved into each
    victim's own rows, and every part reordered."""
    x, y = shared
    rng = np.random.default_rng(seed)
    moving = rng.permutation(len(y)) < len(y) // 2
    stay = rng.permutation(np.flatnonzero(~moving))
    again = [
        (np.r_[x[moving], ox][order], np.r_[y[moving], oy][order])
        for ox, oy in own
        for order in [rng.permutation(int(moving.sum()) + len(oy))]
    ]
    return (x[stay], y[stay]), again


def defend(
    defense, shared, own, budget: list[int]
) -> tuple[Defended, RowOrder, TrainingRows, list]:
    """The defense on these rows: its result, the order, what it saw, and each victim's rows."""
    rows_of = [
        (np.concatenate([shared[0], ox]), np.concatenate([shared[1], oy])) for ox, oy in own
    ]

    def train(keep: list[np.ndarray], start: Victims | None = None) -> ContentVictims:
        return ContentVictims.fit([(x[k], y[k]) for (x, y), k in zip(rows_of, keep, strict=True)])

    order = RowOrder(shared, own, seed=3)
    holdout_rng = np.random.default_rng(9)
    holdout_y = np.arange(40) % 2
    holdout = (3.0 * holdout_y[:, None] + holdout_rng.normal(0, 0.6, (40, 2)), holdout_y)
    rows = order.view(2, removal_budget=budget, train=train, holdout=holdout)
    undefended = ContentVictims.fit(rows_of)
    return defense(rows, undefended), order, rows, rows_of


def multiset(x: np.ndarray, y: np.ndarray, values: np.ndarray) -> list[tuple]:
    """Rows as sortable (content, label, value) triples: what a defense decided per row."""
    return sorted(zip(map(bytes, x), y.tolist(), values.tolist(), strict=True))


def a_defense(option: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"defense={option}"])
    return instantiate(cfg.defense)


def test_every_defense_option_is_checked_here():
    """A new conf/defense file joins the contract test without editing it."""
    assert {"trim", "sever", "activation_clustering", "spectral_signatures"} <= set(OPTIONS)
    assert {"fine_pruning", "certified", "none"} <= set(OPTIONS)


@pytest.mark.parametrize("option", OPTIONS)
def test_a_defense_decides_the_same_whichever_rows_were_called_poison(option):
    defense = a_defense(option)
    shared, own = planted_rows()
    budget = [len(y) for _, y in own]  # the true poison count, held fixed
    probe = np.random.default_rng(5).normal(1.5, 2.0, (30, 2))
    first, order, rows, rows_of = defend(defense, shared, own, budget)
    shared_b, own_b = moved_to_own(shared, own, seed=1)
    second, order_b, rows_b, rows_of_b = defend(a_defense(option), shared_b, own_b, budget)

    keep, keep_b = order.in_training_order(first.keep), order_b.in_training_order(second.keep)
    score = order.in_training_order(first.score)
    score_b = order_b.in_training_order(second.score)
    for v in range(len(own)):
        np.testing.assert_array_equal(rows.labels[v], rows_b.labels[v])
        (x, y), (xb, yb) = rows_of[v], rows_of_b[v]
        assert multiset(x, y, keep[v]) == multiset(xb, yb, keep_b[v])
        np.testing.assert_allclose(
            [s for *_, s in multiset(x, y, score[v])],
            [s for *_, s in multiset(xb, yb, score_b[v])],
            rtol=1e-9,
            atol=1e-12,
        )
    assert first.rounds == second.rounds and first.details == second.details
    for name, victims in {"defended": first.victims, **first.stages}.items():
        again = {"defended": second.victims, **second.stages}[name]
        np.testing.assert_allclose(victims.predict(probe), again.predict(probe))
        np.testing.assert_allclose(
            victims.predict_proba(probe), again.predict_proba(probe), rtol=1e-9, atol=1e-12
        )


@pytest.mark.parametrize("option", OPTIONS)
def test_a_defense_finds_planted_rows_spares_a_clean_victim_and_repeats_itself(option):
    """The case above means something: a defense that removes rows (as it declares) removes
    planted rows from the poisoned victim, at least 5 of its 16, and keeps 80% of the clean
    victim's; one that does not keeps every row. One keep mask per victim, over its rows, and
    the same input gives the same decisions."""
    shared, own = planted_rows()
    budget = [len(y) for _, y in own]
    defense = a_defense(option)
    defended, order, _, rows_of = defend(defense, shared, own, budget)
    keep = order.in_training_order(defended.keep)
    assert [len(k) for k in keep] == [len(y) for _, y in rows_of]
    if defense.removes_rows:
        assert (~keep[0][len(shared[1]) :]).sum() >= 5
        assert keep[1].mean() >= 0.8
    else:
        assert all(k.all() for k in keep)
    again, order_again, _, _ = defend(a_defense(option), shared, own, budget)
    for mine, theirs in zip(keep, order_again.in_training_order(again.keep), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_what_a_defense_receives_holds_no_provenance():
    """Its attributes: the labels in content order, the class count, the budget, the holdout,
    and two functions; no lengths of the parts, no offsets, no indices."""
    shared, own = planted_rows()
    rows = RowOrder(shared, own, seed=0).view(2, [17, 0], train=None)
    assert set(vars(rows)) == {"labels", "n_classes", "removal_budget", "holdout"} | {
        "_outputs",
        "_retrain",
    }
    assert [len(labels) for labels in rows.labels] == [137, 122]
    # Victim 0's planted rows are spread through its order, not gathered at its end.
    where = RowOrder(shared, own, seed=0).in_training_order([np.arange(137), np.arange(122)])[0]
    assert where[120:].max() - where[120:].min() > 60


@pytest.mark.parametrize("option", [o for o in OPTIONS if o != "none"])
def test_a_defenses_defaults_are_its_config(option):
    """Code that builds a defense without the config (`subpop figure2`'s TRIM and SEVER) gets
    the settings the config gives."""
    configured = a_defense(option)
    assert vars(type(configured)()) == vars(configured)
