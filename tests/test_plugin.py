"""A user's own defense, kept outside the package (examples/plugin/: k-NN label sanitisation),
run by the stock `subpop` from another folder: validation, identity, caching, resume and the
report work for it as for ours."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .test_cli import QUICK, by_role, command, runs

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugin"


def example(name: str):
    """A module of examples/plugin/, imported as its user would (it is not in the package)."""
    spec = importlib.util.spec_from_file_location(name, PLUGIN / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_knn_sanitization_relabels_a_planted_flip_to_its_neighbours_label():
    """Two tight groups on a line, one row of the left group flipped: it alone is relabelled
    (its 3 neighbours all say 0); with eta above its share, nothing is."""
    knn = example("knn_sanitization")
    points = np.array([[0.0], [0.1], [0.2], [0.3], [5.0], [5.1], [5.2], [5.3]])
    labels = np.array([0, 0, 1, 0, 1, 1, 1, 1])
    majority, share = knn.neighbours_vote(points, labels, 3, 2)
    assert majority.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert share[2] == 1.0 and share[0] == pytest.approx(2 / 3)  # row 0: rows 1, 2, 3
    relabel = (share >= 0.5) & (majority != labels)
    assert relabel.tolist() == [False, False, True, False, False, False, False, False]


def user_subpop(plugin: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`subpop` as a user runs it: their folder on the Python path, their configs on Hydra's
    search path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin), env.get("PYTHONPATH")]))
    search = f"hydra.searchpath=[file://{plugin / 'conf'}]"
    return subprocess.run(
        command(*args, search), cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_a_users_own_defense_runs_resumes_and_reports_with_no_edit_to_the_package(tmp_path):
    plugin = shutil.copytree(PLUGIN, tmp_path / "my_defenses")
    mlruns = tmp_path / "mlruns"
    setting = (*QUICK, "defense=knn_sanitization", "defense.k=5", f"tracking.dir={mlruns}")

    bad = user_subpop(plugin, *setting, "defense.kk=3", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: defense.kk: no such key; valid keys: k, eta, layer"
    )
    bad = user_subpop(plugin, *setting, "defense.eta=0", cwd=tmp_path)
    assert bad.returncode == 2 and "error: defense.eta: got 0" in bad.stderr
    assert runs(mlruns) == []

    done = user_subpop(plugin, *setting, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = by_role(runs(mlruns), "job")
    assert run.info.status == "FINISHED"
    assert run.data.params["defense.k"] == "5"
    assert run.data.params["defense._target_"] == "knn_sanitization.KnnSanitization"
    assert 0 <= run.data.metrics["poison_found/mean"] <= 1
    assert np.isfinite(run.data.metrics["defended_target_damage/worst5"])

    # The same setting as a sweep's job: its identity has a FINISHED run, so it is skipped.
    again = user_subpop(plugin, "-m", *setting, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(by_role(runs(mlruns), "job")) == 1

    # The user edits their defense: its code is in the identity, so the job runs again,
    # and the stages before the defense come from the cache.
    source = plugin / "knn_sanitization.py"
    source.write_text(source.read_text().replace("votes.max(1) / k", "votes.max(1) / float(k)"))
    edited = user_subpop(plugin, "-m", *setting, cwd=tmp_path)
    assert edited.returncode == 0, edited.stderr[-3000:]
    jobs = by_role(runs(mlruns), "job")
    assert len(jobs) == 2
    newest = max(jobs, key=lambda r: r.info.start_time)
    assert newest.data.tags["cache.clean_victim"] == "hit"

    out = tmp_path / "report.md"
    done = subpop_report(mlruns, out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "knn_sanitization" in out.read_text()


def subpop_report(mlruns: Path, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    args = ("report", "--tracking-dir", str(mlruns), "--out", str(out), "--paper", "")
    return subprocess.run(command(*args), cwd=cwd, capture_output=True, text=True, timeout=600)
