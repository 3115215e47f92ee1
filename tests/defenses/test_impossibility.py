"""The paper's negative results as commands: Figure 2 (TRIM and SEVER remove the real points of
an attacked subpopulation) and Theorem 7.1 (a flip of the smallest subpopulation's prediction
by at most |D_K| <= n/k label-flipped points, for a locally dependent learner)."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest

from subpop_runner.defenses.impossibility import figure2, theorem71

SEEDS = range(5)


@pytest.fixture(scope="module")
def draws():
    """Figure 2's draw for a seed, each computed once (the pinned test needs only seed 0)."""
    return functools.cache(figure2)


def test_figure2s_draw_and_what_each_defense_does_to_it_are_pinned(draws):
    """Seed 0 as `subpop figure2` prints it: the models' target accuracy, the real target
    points and poisons each defense removed, and the models themselves."""
    result = draws(0)
    assert result.target_accuracy == {
        "unpoisoned": 1.0,
        "poisoned": 0.23,
        "poisoned + TRIM": 0.02,
        "poisoned + SEVER": 0.24,
    }
    assert result.damage("poisoned + TRIM") == pytest.approx(0.98)
    removed = {
        name: (result.real_removed(name), result.poison_removed(name)) for name in result.kept
    }
    assert removed == {"poisoned + TRIM": (20, 7), "poisoned + SEVER": (5, 5)}
    assert result.group.tolist() == [0] * 20 + [1] * 20 + [2] * 20
    assert result.y.tolist() == [0] * 20 + [1] * 40 and result.poison_y.tolist() == [0] * 30
    np.testing.assert_allclose(result.x.sum(0), [-0.07027636, 5.91773148], rtol=1e-6)
    np.testing.assert_allclose(result.poison_x.sum(0), [-1.86613082, 2.01317504], rtol=1e-6)
    coefficients = {
        "unpoisoned": ([2.129323005, -0.07380776491], 3.249407149),
        "poisoned": ([1.278819994, 0.06970844004], -0.4943380639),
        "poisoned + TRIM": ([2.106069035, 0.1077808073], -3.156050005),
        "poisoned + SEVER": ([2.007833230, 0.7301028481], -0.7502407138),
    }
    for name, (coef, intercept) in coefficients.items():
        np.testing.assert_allclose(result.models[name].coef_[0], coef, rtol=1e-6)
        np.testing.assert_allclose(result.models[name].intercept_[0], intercept, rtol=1e-6)


def test_trim_removes_the_subpopulations_real_points_and_the_damage_grows(draws):
    for result in map(draws, SEEDS):
        assert result.damage("poisoned") > 0.4  # the attack works
        assert result.real_removed("poisoned + TRIM") >= 15  # of the 20 real target points
        assert result.poison_removed("poisoned + TRIM") <= 10  # of the 30 poisons
        assert result.damage("poisoned + TRIM") > result.damage("poisoned")


def test_sever_removes_real_points_and_does_not_undo_the_attack(draws):
    for result in map(draws, SEEDS):
        assert result.real_removed("poisoned + SEVER") >= 1
        assert result.damage("poisoned + SEVER") > 0.5


@pytest.fixture(scope="module")
def theorems():
    """Theorem 7.1's setting (n = 1000, k = 8) for a seed, each computed once."""
    return functools.cache(lambda seed: theorem71(n=1000, k=8, seed=seed))


def test_theorem71s_sizes_are_pinned(theorems):
    """Seed 0 as `subpop theorem71 --n 1000 --k 8` prints it."""
    r = theorems(0)
    assert (r.n, r.k, r.smallest, r.observed) == (1000, 8, 35, 35)
    assert r.smallest_weight == pytest.approx(0.036987580105434154, rel=1e-9)
    assert r.flipped_at_theorem_size == pytest.approx(45 / 82)
    assert r.collateral_at_theorem_size == 0.0
    assert r.bound == 125.0
    assert r.weight_bound == pytest.approx(2 * 0.036987580105434154 * 1000)
    assert r.weight_bound_probability == pytest.approx(1 - np.exp(-0.036987580105434154 * 500))


@pytest.mark.parametrize("seed", range(3))
def test_label_flips_of_the_smallest_subpopulation_flip_a_locally_dependent_learner(
    theorems, seed
):
    r = theorems(seed)
    assert 0 < r.observed <= r.smallest <= r.bound
    assert r.flipped_at_theorem_size > 0.5
    assert r.collateral_at_theorem_size == 0  # the other subpopulations never notice


def test_a_subpopulation_no_training_point_drew_is_the_smallest_and_never_flips():
    """20 points from 10 subpopulations: one of them drew none (size 0, not left out of the
    count, also when it is the last one: seed 7), and an attack on it of 4 × 0 points never
    flips it: observed is -1."""
    for seed in (0, 7):
        r = theorem71(n=20, k=10, neighbours=3, seed=seed)
        assert (r.smallest, r.observed) == (0, -1)


@pytest.mark.slow
def test_the_commands_print_the_sizes_and_draw_the_figure(tmp_path):
    out = tmp_path / "figure2.png"
    run = [sys.executable, "-m", "subpop_runner"]
    done = subprocess.run([*run, "figure2", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0 and "poisoned + TRIM: target damage" in done.stdout
    assert out.stat().st_size > 10_000
    done = subprocess.run([*run, "theorem71", "--n", "500"], capture_output=True, text=True)
    assert done.returncode == 0 and "observed:" in done.stdout and "<= n/k" in done.stdout
