"""The `subpop` command end to end: Hydra -> Lightning -> MLflow -> report (real UCI Adult).

Bad input ends as one `error:` line, exit code 2 and no MLflow run; sweeps validate every job
first, resume after a SIGKILL without duplicates, run in parallel through Hydra's launchers,
and always close their parent run."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
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
    "job_seconds",
}
# A few epochs: these tests check the plumbing, not the numbers.
QUICK = ("experiment=smoke_adult", "trainer.max_epochs=3")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "subpop_runner", *args]


def subpop(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=cwd, capture_output=True, text=True, timeout=600)


def client(tracking: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tracking / 'mlflow.db'}")


def runs(tracking: Path, experiment: str | None = None) -> list:
    if not (tracking / "mlflow.db").exists():
        return []
    store = client(tracking)
    found = [e for e in store.search_experiments() if experiment in (None, e.name)]
    return store.search_runs([e.experiment_id for e in found]) if found else []


def by_role(found: list, role: str) -> list:
    return [r for r in found if r.data.tags.get("subpop.role") == role]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_smoke_run_logs_metrics_tags_and_artifacts(tmp_path):
    done = subpop("experiment=smoke_adult", f"tracking.dir={tmp_path / 'mlruns'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs(tmp_path / "mlruns", "smoke_adult")
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "experiment=smoke_adult"  # overrides, never paths
    assert METRICS <= set(run.data.metrics)
    assert 0.5 < run.data.metrics["clean_accuracy"] <= 1
    assert run.data.params["selector.k"] == "8" and run.data.params["attack.alpha"] == "1.0"
    tags = run.data.tags
    assert tags["choice.dataset"] == "adult" and tags["choice.selector"] == "cluster_match"
    assert tags["device"] == "cpu" and len(tags["subpop.job_key"]) == 64
    store = client(tmp_path / "mlruns")
    assert {a.path for a in store.list_artifacts(run.info.run_id)} == {
        "subpops.csv",
        "poison.csv",
        "config.yaml",
    }
    table = pd.read_csv(store.download_artifacts(run.info.run_id, "subpops.csv", str(tmp_path)))
    assert len(table) == 8
    attacked = table[table["status"] == "attacked"]
    assert (attacked["poison_count"] == attacked["aux_size"]).all()  # alpha = 1


def test_a_defended_run_logs_before_and_after_and_what_was_removed(tmp_path):
    mlruns = tmp_path / "mlruns"
    done = subpop(*QUICK, "defense=trim", f"tracking.dir={mlruns}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs(mlruns, "smoke_adult_trim")
    assert run.data.tags["choice.defense"] == "trim"
    assert run.data.params["defense.oracle_m"] == "true"
    metrics = run.data.metrics
    for name in ("defended_target_damage", "poison_found", "poison_precision", "removed_fraction"):
        assert f"{name}/worst5" in metrics
    assert metrics["target_damage_reduction/worst5"] == pytest.approx(
        metrics["target_damage/worst5"] - metrics["defended_target_damage/worst5"]
    )
    assert "defense_seconds" in metrics
    store = client(mlruns)
    table = pd.read_csv(store.download_artifacts(run.info.run_id, "subpops.csv", str(tmp_path)))
    attacked = table[table["status"] == "attacked"]
    # The oracle m removes exactly the poison count: found and precision are one number.
    assert (attacked["poison_found"] == attacked["poison_precision"]).all()
    assert attacked["defended_target_damage"].notna().all()


def test_a_sweep_over_defenses_is_one_experiment_its_runs_table_and_report_tell_them_apart(
    tmp_path,
):
    """`-m defense=none,trim`: every job under the sweep's parent in one experiment (MLflow's
    runs table compares them), which opens on the runs table; the report still shows the
    TRIM jobs' defended columns, and only theirs."""
    mlruns = tmp_path / "mlruns"
    args = ("-m", *QUICK, "defense=none,trim", f"tracking.dir={mlruns}")
    done = subpop(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (experiment,) = client(mlruns).search_experiments(filter_string="name = 'smoke_adult'")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    found = runs(mlruns)
    (parent,) = by_role(found, "sweep")
    children = by_role(found, "job")
    assert {r.info.experiment_id for r in found} == {experiment.experiment_id}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(r.data.tags["choice.defense"] for r in children) == ["none", "trim"]

    out = tmp_path / "report.md"
    done = subpop(
        "report", "--tracking-dir", str(mlruns), "--out", str(out), "--paper", "", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    overview = out.read_text().split("## Defenses side by side")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.split("|")[1:3]] for line in overview.splitlines()]
    assert ["smoke_adult", "trim"] in rows and ["smoke_adult", "none"] not in rows


def test_multirun_makes_one_closed_parent_named_by_its_axes_then_report(tmp_path):
    mlruns = tmp_path / "mlruns"
    done = subpop("-m", *QUICK, "attack.alpha=0.5,2", f"tracking.dir={mlruns}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    found = runs(mlruns, "smoke_adult")
    (parent,) = by_role(found, "sweep")
    children = by_role(found, "job")
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "config: attack.alpha=0.5,2"
    assert sorted(r.info.run_name for r in children) == ["attack.alpha=0.5", "attack.alpha=2.0"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    # the second job reuses the first one's clean victim, surrogate and clustering
    tags = sorted(
        (r.data.tags["cache.clean_victim"], r.data.tags["cache.clustering"]) for r in children
    )
    assert tags == [("hit", "hit"), ("miss", "miss")]

    out = tmp_path / "report" / "smoke.md"
    out.parent.mkdir()  # --out names a file in a folder that exists
    done = subpop(
        "report", "--tracking-dir", str(mlruns), "--out", str(out), "--paper", "", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "## smoke_adult" in text and "| α=0.5" in text and "| α=2" in text
    assert (out.parent / "smoke_smoke_adult.png").stat().st_size > 1000
    assert len(by_role(runs(mlruns, "reports"), "report")) == 1
    assert by_role(runs(mlruns, "smoke_adult"), "report") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["selector=nonexistent"], "selector: no option 'nonexistent'"),
        (["selector.kk=3"], "selector.kk: no such key"),
        (["+model.dropout=0.5"], "model.dropout: no such key"),
        (["seed=abc"], "seed: "),
        (["seed=-3"], "seed: got -3"),
        (["attack.alpha=-1"], "attack.alpha: got -1.0"),
        (["selector.take=lowest"], "selector.take: "),
        (["selector.k=5000"], "choose selector.k <= 667"),
        (["dataset.data_dir=/nonexistent/adult"], "not found in dataset.data_dir"),
        (["tracking=server", "tracking.uri=http://127.0.0.1:9"], "cannot reach the MLflow"),
        (["tracking.dir=/proc/x"], "tracking.dir: cannot write"),
        (["cache.dir=/proc/x"], "cache.dir"),
        (["training.memory_mb=0"], "training.memory_mb: got 0.0"),
        (["cache.enabled=maybe"], "cache.enabled: "),
        (["dataset=fashion_mnist", "dataset.data_dir=/nonexistent"], "/nonexistent"),
        (
            ["dataset=fashion_mnist", "model=conv", "selector.representation=hidden"],
            "selector.representation: the model has no layer 'hidden'; valid: input, pool0",
        ),
        (
            ["dataset=fashion_mnist", "model=vgg_ll", "model.backbone.weights=/none/vgg16.pth"],
            "/none/vgg16.pth not found",
        ),
        (["model=vgg_ll", "model/backbone=bogus"], "model/backbone: no option 'bogus'"),
        (["defense=bogus"], "defense: no option 'bogus'"),
        (["defense=sever", "defense.fraction=0.7"], "defense.fraction: got 0.7"),
        (["defense=trim", "defense.m=5000"], "defense.m: 5000 removals of a"),
        (["defense=trim", "defense.m=3", "defense.fraction=0.1"], "one of m and fraction"),
        (["defense=activation_clustering", "defense.max_size=0.9"], "defense.max_size"),
        (
            ["defense=trim", "defense.warm_start=true", "model=sklearn_mlp"],
            "defense.warm_start: this model's victims retrain from scratch only",
        ),
        # Spectral signatures retrains once, and that fit is never warm: no such option.
        (
            ["defense=spectral_signatures", "defense.warm_start=true"],
            "defense.warm_start: no such key",
        ),
        (["defense=fine_pruning", "defense.holdout_fraction=0"], "defense.holdout_fraction"),
        (
            ["defense=fine_pruning", "model=efficientnet_ll", "model.backbone=null"]
            + ["selector.representation=input"],
            "no hidden units to prune",
        ),
        (
            ["defense=certified", "model=conv", "dataset=fashion_mnist"]
            + ["selector.representation=penultimate"],
            "defense=certified: its ridge head",
        ),
        (["defense=certified", "defense.flip_probability=0.5"], "defense.flip_probability"),
        (["attack=gradient_optimization", "model=sklearn_mlp"], "offers no gradients"),
        (["attack=influence", "attack.lr=0"], "attack.lr: got 0"),
        (
            ["attack=influence", "model=conv", "dataset=fashion_mnist"]
            + ["selector.representation=penultimate"],
            "attack=influence: needs a head on fixed features",
        ),
    ],
)
def test_bad_input_is_one_error_line_exit_2_and_no_run(tmp_path, args, message):
    mlruns = tmp_path / "mlruns"
    done = subpop("experiment=smoke_adult", f"tracking.dir={mlruns}", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = error_lines(done.stderr)
    assert line.startswith("error: ") and message in line
    assert runs(mlruns) == []


def test_multirun_checks_every_job_before_the_first_runs(tmp_path):
    mlruns = tmp_path / "mlruns"
    done = subpop("-m", *QUICK, "attack.alpha=1,-1,2", f"tracking.dir={mlruns}", cwd=tmp_path)
    assert done.returncode == 2
    (line,) = error_lines(done.stderr)
    assert "attack.alpha: got -1.0" in line and "attack.alpha=-1" in line
    assert runs(mlruns) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-m", "defense=trim", "defense.roundz=3"],
            "defense.roundz: no such key; valid keys: warm_start, rounds, m, fraction (in the "
            "job defense=trim defense.roundz=3",
        ),
        (
            ["-m", "attack.alpha=1,2", "defense=trim", "defense.roundz=3"],
            "defense.roundz: no such key; valid keys: warm_start, rounds, m, fraction (in the "
            "job attack.alpha=1 defense=trim defense.roundz=3",
        ),
        # Hydra composes the sweep's shared config with defense=none, which has no keys.
        (
            ["-m", "defense=sever,trim", "defense.m=3"],
            "defense.m: no such key; valid keys: warm_start, rounds, fraction, iterations (in "
            "the job defense=sever defense.m=3",
        ),
        (
            ["-m", "defense=trim,sever", "defense.rounds=3"],
            "defense.rounds: every job of this multirun has this key, but Hydra sets it first "
            "on the multirun's shared config, which has each swept group at its default option "
            "and lacks it; write ++defense.rounds=3 (each job still checks it)",
        ),
    ],
)
def test_a_bad_key_in_a_multirun_names_the_job_and_its_valid_keys(tmp_path, args, message):
    done = subpop(*args, f"tracking.dir={tmp_path / 'mlruns'}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = error_lines(done.stderr)
    assert line.startswith(f"error: {message}")
    assert list(tmp_path.iterdir()) == []  # no store, no sweep folder: no job started


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["figure2", "--out", "/nonexistent_dir/x/fig.png"], "--out: the folder /nonexistent"),
        (["figure2", "--seed", "x"], "--seed: got x; valid: an integer >= 0"),
        (["theorem71", "--n", "-5"], "--n: got -5; valid: an integer >= 1"),
        (["theorem71", "--n", "10", "--k", "20"], "--k: got 20 for --n 10; valid: "),
        (["report", "--out", "none/r.md"], "--out: the folder none does not exist; create it"),
        (["report", "--tracking-dir", "none"], "--tracking-dir: no MLflow store at sqlite:"),
    ],
)
def test_a_bad_option_of_a_command_outside_hydra_is_one_error_line(tmp_path, args, message):
    done = subpop(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = error_lines(done.stderr)  # no usage block, no traceback
    assert line.startswith(f"error: {message}") and done.stdout == ""
    assert list(tmp_path.iterdir()) == [] and not Path("/nonexistent_dir").exists()


def job_statuses(tracking: Path) -> list[str]:
    """Statuses of the job runs, read from the SQLite file without MLflow: a client opening a
    store that another process is still creating would race it to create the tables."""
    try:
        with sqlite3.connect(f"file:{tracking / 'mlflow.db'}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'subpop.role' AND t.value = 'job'"
            ).fetchall()
    except sqlite3.OperationalError:  # no file or no tables yet
        return []
    return [status for (status,) in rows]


def wait_for(predicate, timeout: float = 300, every: float = 0.5) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(every)


# Training that lasts until it is interrupted.
ENDLESS = ("experiment=smoke_adult", "trainer.max_epochs=3000", "cache.enabled=false")


def interrupt_once_running(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """Start ``subpop``, press Ctrl-C once a job is training; the process and its stderr."""
    mlruns = tmp_path / "mlruns"
    process = subprocess.Popen(
        command(*args, f"tracking.dir={mlruns}"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: job_statuses(mlruns) == ["RUNNING"])
    time.sleep(2)  # into the training loop, where Lightning turns Ctrl-C into exit(1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    return process, stderr


def test_ctrl_c_ends_the_run_killed_with_exit_130(tmp_path):
    mlruns = tmp_path / "mlruns"
    process, stderr = interrupt_once_running(tmp_path, *ENDLESS)
    assert process.returncode == 130
    assert error_lines(stderr)[-1].startswith("interrupted:")
    (run,) = runs(mlruns)
    assert run.info.status == "KILLED"


def test_sweep_killed_mid_job_resumes_with_every_job_finished_once(tmp_path):
    mlruns = tmp_path / "mlruns"
    args = (
        "-m",
        *QUICK,
        "trainer.max_epochs=200",
        "attack.alpha=0.5,1,2",
        f"tracking.dir={mlruns}",
    )
    process = subprocess.Popen(
        command(*args), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    # A job in the middle of training, after at least one finished (polling may miss the
    # moment the second job starts, so any such state will do). Polled every 0.5 s with 60
    # epochs a job, the state was once missed and the wait timed out: poll faster, train longer.
    wait_for(lambda: {"FINISHED", "RUNNING"} <= set(job_statuses(mlruns)), every=0.05)
    process.kill()  # SIGKILL: nothing can clean up
    process.wait()
    finished_before = job_statuses(mlruns).count("FINISHED")
    assert finished_before in (1, 2)

    done = subpop(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = f"resume: {finished_before} of 3 jobs already have a FINISHED run"
    assert resumed in done.stdout + done.stderr
    jobs = by_role(runs(mlruns), "job")
    finished = [r for r in jobs if r.info.status == "FINISHED"]
    keys = Counter(r.data.tags["subpop.job_key"] for r in finished)
    assert len(keys) == 3 and set(keys.values()) == {1}  # 0 lost, 0 duplicates
    assert sorted(float(r.data.params["attack.alpha"]) for r in finished) == [0.5, 1.0, 2.0]

    again = subpop(*args, cwd=tmp_path)
    assert "nothing to run" in again.stdout + again.stderr
    assert len(by_role(runs(mlruns), "job")) == len(jobs)
    forced = subpop(*args, "hydra.sweeper.resume=false", "attack.alpha=2", cwd=tmp_path)
    assert forced.returncode == 0
    assert len(by_role(runs(mlruns), "job")) == len(jobs) + 1


def test_two_sweeps_started_together_keep_their_own_folders_and_parents(tmp_path):
    mlruns = tmp_path / "mlruns"
    processes = [
        subprocess.Popen(
            command("-m", *QUICK, f"seed={seed}", f"tracking.dir={mlruns}"),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for seed in (0, 1)
    ]
    for process in processes:
        assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:]
    found = runs(mlruns)
    parents = by_role(found, "sweep")
    assert len(parents) == 2
    assert len({p.data.tags["subpop.sweep_dir"] for p in parents}) == 2
    children = Counter(r.data.tags["mlflow.parentRunId"] for r in by_role(found, "job"))
    assert children == Counter({p.info.run_id: 1 for p in parents})


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
    ],
)
def test_parallel_launchers_share_one_store_and_cache(tmp_path, launcher):
    mlruns = tmp_path / "mlruns"
    done = subpop(
        "-m", *QUICK, *launcher, "attack.alpha=0.5,2", f"tracking.dir={mlruns}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = runs(mlruns, "smoke_adult")
    (parent,) = by_role(found, "sweep")
    jobs = by_role(found, "job")
    assert parent.info.status == "FINISHED"
    assert [r.info.status for r in jobs] == ["FINISHED", "FINISHED"]
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert len(list((tmp_path / ".cache" / "stages" / "clean_victim").glob("*.npz"))) == 1


def test_chdir_jobs_write_to_the_launch_directory_store(tmp_path):
    done = subpop(*QUICK, "hydra.job.chdir=true", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(runs(tmp_path / "mlruns", "smoke_adult")) == 1
    assert list((tmp_path / ".cache" / "stages").iterdir())


def test_a_job_with_bad_input_fails_alone_and_the_sweep_says_so(tmp_path):
    """k larger than the aux set is only known once the data are loaded, inside the job: that
    job's run ends FAILED saying why, the jobs after it still run, the sweep ends FAILED with
    one error line, and a rerun repeats only the failed job."""
    mlruns = tmp_path / "mlruns"
    args = ("-m", *QUICK, "selector.k=5,5000,8", f"tracking.dir={mlruns}")
    done = subpop(*args, cwd=tmp_path)
    assert done.returncode == 2
    (line,) = [line for line in error_lines(done.stderr) if line.startswith("error:")]
    assert "selector.k" in line and "1 of 3 jobs failed with bad input" in line
    found = runs(mlruns, "smoke_adult")
    (parent,) = by_role(found, "sweep")
    assert parent.info.status == "FAILED"
    jobs = {r.data.params["selector.k"]: r for r in by_role(found, "job")}
    assert {k: r.info.status for k, r in jobs.items()} == {
        "5": "FINISHED",
        "5000": "FAILED",
        "8": "FINISHED",
    }
    assert "selector.k" in jobs["5000"].data.tags["subpop.error"]
    again = subpop(*args, cwd=tmp_path)
    assert "resume: 2 of 3 jobs already have a FINISHED run" in again.stdout + again.stderr


def test_two_identical_sweeps_started_together_run_each_job_once(tmp_path):
    mlruns = tmp_path / "mlruns"
    args = ("-m", *QUICK, "attack.alpha=0.5,1,2", f"tracking.dir={mlruns}")
    processes = [
        subprocess.Popen(
            command(*args),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:]
    jobs = by_role(runs(mlruns), "job")
    assert [r.info.status for r in jobs] == ["FINISHED"] * 3
    assert sorted(float(r.data.params["attack.alpha"]) for r in jobs) == [0.5, 1.0, 2.0]


def test_ctrl_c_in_a_sweep_ends_the_job_and_the_sweep_killed(tmp_path):
    process, stderr = interrupt_once_running(tmp_path, "-m", *ENDLESS, "attack.alpha=1,2")
    assert process.returncode == 130, stderr[-3000:]
    found = runs(tmp_path / "mlruns")
    assert [r.info.status for r in by_role(found, "job")] == ["KILLED"]
    assert [r.info.status for r in by_role(found, "sweep")] == ["KILLED"]
