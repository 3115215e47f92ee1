"""The paper's negative results as commands: Figure 2 (TRIM and SEVER remove the real points of
an attacked subpopulation) and Theorem 7.1 (a flip of the smallest subpopulation's prediction
by at most |D_K| <= n/k label-flipped points, for a locally dependent learner)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from subpop_runner.defenses.impossibility import figure2, theorem71

SEEDS = range(5)


@pytest.fixture(scope="module")
def draws():
    return [figure2(seed) for seed in SEEDS]


def test_trim_removes_the_subpopulations_real_points_and_the_damage_grows(draws):
    for result in draws:
        assert result.damage("poisoned") > 0.4  # the attack works
        assert result.real_removed("poisoned + TRIM") >= 15  # of the 20 real target points
        assert result.poison_removed("poisoned + TRIM") <= 10  # of the 30 poisons
        assert result.damage("poisoned + TRIM") > result.damage("poisoned")


def test_sever_removes_real_points_and_does_not_undo_the_attack(draws):
    for result in draws:
        assert result.real_removed("poisoned + SEVER") >= 1
        assert result.damage("poisoned + SEVER") > 0.5


@pytest.mark.parametrize("seed", range(3))
def test_label_flips_of_the_smallest_subpopulation_flip_a_locally_dependent_learner(seed):
    r = theorem71(n=1000, k=8, seed=seed)
    assert 0 < r.observed <= r.smallest <= r.bound
    assert r.flipped_at_theorem_size > 0.5
    assert r.collateral_at_theorem_size == 0  # the other subpopulations never notice


@pytest.mark.slow
def test_the_commands_print_the_sizes_and_draw_the_figure(tmp_path):
    out = tmp_path / "figure2.png"
    run = [sys.executable, "-m", "subpop_runner"]
    done = subprocess.run([*run, "figure2", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0 and "poisoned + TRIM: target damage" in done.stdout
    assert out.stat().st_size > 10_000
    done = subprocess.run([*run, "theorem71", "--n", "500"], capture_output=True, text=True)
    assert done.returncode == 0 and "observed:" in done.stdout and "<= n/k" in done.stdout
