"""The `subpop` command end to end: Hydra -> Lightning -> MLflow -> report (real UCI Adult)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

METRICS = {
    "clean_accuracy",
    "target_damage/worst1",
    "target_damage/worst5",
    "target_damage/worst10",
    "collateral_damage/worst5",
    "subpops/attacked",
}


def subpop(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "subpop_runner", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def runs(tracking: Path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{tracking / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def test_smoke_run_logs_metrics_and_artifacts(tmp_path):
    done = subpop(
        "experiment=smoke_adult",
        f"tracking.dir={tmp_path / 'mlruns'}",
        f"hydra.run.dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs(tmp_path / "mlruns", "smoke_adult")
    assert run.info.status == "FINISHED"
    assert METRICS <= set(run.data.metrics)
    assert 0.5 < run.data.metrics["clean_accuracy"] <= 1
    assert run.data.params["selector.k"] == "8" and run.data.params["attack.alpha"] == "1.0"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "subpops.csv",
        "poison.csv",
        "config.yaml",
    }
    table = pd.read_csv(client.download_artifacts(run.info.run_id, "subpops.csv", str(tmp_path)))
    assert len(table) == 8
    assert {
        "id",
        "description",
        "aux_size",
        "train_size",
        "test_size",
        "poison_count",
        "flip_label",
        "clean_acc_target",
        "poisoned_acc_target",
        "target_damage",
        "collateral_damage",
    } <= set(table.columns)
    attacked = table[table["status"] == "attacked"]
    assert (attacked["poison_count"] == attacked["aux_size"]).all()  # alpha = 1


def test_multirun_makes_parent_and_children_then_report(tmp_path):
    mlruns = tmp_path / "mlruns"
    done = subpop(
        "-m",
        "experiment=smoke_adult",
        "attack.alpha=0.5,2",
        f"tracking.dir={mlruns}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = runs(mlruns, "smoke_adult")
    parents = [r for r in found if r.data.tags.get("subpop.role") == "sweep"]
    children = [r for r in found if r.data.tags.get("subpop.role") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(float(r.data.params["attack.alpha"]) for r in children) == [0.5, 2.0]
    # the second job reuses the first one's clean victim, surrogate and clustering
    tags = sorted(
        (r.data.tags["cache.clean_victim"], r.data.tags["cache.clustering"]) for r in children
    )
    assert tags == [("hit", "hit"), ("miss", "miss")]

    out = tmp_path / "report" / "smoke.md"
    done = subpop(
        "report",
        "-e",
        "smoke_adult",
        "--tracking-dir",
        str(mlruns),
        "--out",
        str(out),
        "--paper",
        "",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "| worst" in text and "| α=0.5" in text and "| α=2" in text
    assert (out.parent / "smoke_smoke_adult.png").stat().st_size > 1000
    report_runs = [
        r for r in runs(mlruns, "smoke_adult") if r.data.tags.get("subpop.role") == "report"
    ]
    assert len(report_runs) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["selector=nonexistent"], "Could not find 'selector/nonexistent'"),
        (["attack.alpha=0"], "attack.alpha must be > 0, got 0"),
        (["attack.alpha=-1"], "attack.alpha must be > 0, got -1"),
        (["selector.k=5000"], "choose selector.k <= 666"),
        (["dataset.data_dir=/nonexistent/adult"], "not found in dataset.data_dir"),
        (["tracking=server", "tracking.uri=http://127.0.0.1:9"], "cannot reach the MLflow"),
        (["selector.kk=3"], "Key 'kk' is not in struct"),
        (["+model.dropout=0.5"], "cannot build model"),
        (["training.memory_mb=0"], "training.memory_mb must be > 0, got 0"),
        (["cache.enabled=maybe"], "cache.enabled must be true or false, got 'maybe'"),
    ],
)
def test_bad_input_fails_clearly_before_any_run(tmp_path, args, message):
    mlruns = tmp_path / "mlruns"
    done = subpop(
        "experiment=smoke_adult",
        f"tracking.dir={mlruns}",
        *args,
        f"hydra.run.dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert runs(mlruns, "smoke_adult") == [] if (mlruns / "mlflow.db").exists() else True
