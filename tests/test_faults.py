"""Sweeps under faults: a job whose input turns out bad once its data are loaded, poison that
cannot fit in memory, runs left RUNNING by a killed process, identical sweeps started
together, Ctrl-C, and reading a store without writing it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from subpop_runner import pipeline, sweep
from subpop_runner.attacks.memory import check_memory
from subpop_runner.errors import INTERRUPTED, ConfigError
from subpop_runner.report import main as report_main
from subpop_runner.tracking import ERROR, JOB_KEY, PROCESS, JobInfo, Tracker, process_token

from .conftest import small_adult_config

config = small_adult_config


def job_runs(tracker: Tracker) -> list:
    experiments = [e.experiment_id for e in tracker.client.search_experiments()]
    runs = tracker.client.search_runs(experiments)
    return [r for r in runs if r.data.tags.get("subpop.role") == "job"]


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    return Tracker(dir=str(tmp_path / "mlruns"))


@pytest.mark.slow
def test_bad_input_seen_once_data_are_loaded_leaves_a_sweep_job_failed_run(tmp_path, tracker):
    """k larger than the aux set: the sweep keeps a FAILED run saying why (its other jobs
    run on); a single run would get no run at all."""
    cfg = config(tmp_path, "selector.k=2000")
    parent = tracker.start_sweep("sweep", "k sweep", sweep_dir=str(tmp_path), jobs=3)
    job = JobInfo("adult_cluster_match", "selector.k=2000", {}, parent)
    with pytest.raises(ConfigError, match="selector.k"):
        pipeline.run(cfg, job)
    (run,) = job_runs(tracker)
    assert run.info.status == "FAILED"
    assert "selector.k" in run.data.tags[ERROR]
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["selector.k"] == "2000"


def test_the_same_bad_input_in_a_single_run_creates_no_run(tmp_path):
    with pytest.raises(ConfigError, match="selector.k"):
        pipeline.run(config(tmp_path, "selector.k=2000"))
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_poison_beyond_the_memory_budget_is_refused_before_any_poison_exists(tmp_path, tracker):
    with pytest.raises(ConfigError, match=r"attack.alpha: one subpopulation's .* poison points"):
        pipeline.run(config(tmp_path, "attack.alpha=1e9", "selector.k=4"))
    (run,) = job_runs(tracker)
    assert run.info.status == "FAILED" and "training.memory_mb" in run.data.tags[ERROR]


def test_memory_check_counts_one_victims_rows_and_all_of_them():
    check_memory([100, 200], row_bytes=400, memory_mb=1)  # 80 KB for the largest: fits
    with pytest.raises(ConfigError, match=r"200 poison points need 78.1 KiB"):
        check_memory([100, 200], row_bytes=400, memory_mb=0.05)
    with pytest.raises(ConfigError, match=r"need 4.0 TiB together, more than the "):
        check_memory([2**40] * 4, row_bytes=1, memory_mb=2**30)


def start(tracker: Tracker, key: str, skip_taken: bool = True) -> str | None:
    return tracker.start_job("e", "job", {JOB_KEY: key}, skip_taken=skip_taken)


def test_a_job_whose_identity_finished_is_skipped(tracker):
    first = start(tracker, "k1")
    tracker.client.set_terminated(first, "FINISHED")
    assert start(tracker, "k1") is None
    assert start(tracker, "k2") is not None  # another identity runs
    assert start(tracker, "k1", skip_taken=False) is not None  # resume=false recomputes


def test_a_job_running_in_a_live_process_is_not_duplicated(tracker):
    assert start(tracker, "k1") is not None  # RUNNING in this (live) process
    assert start(tracker, "k1") is None
    assert [r.info.status for r in job_runs(tracker)] == ["RUNNING"]


def test_a_run_left_running_by_a_dead_process_is_closed_killed_and_rerun(tracker):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    zombie = start(tracker, "k1")
    tracker.client.set_tag(zombie, PROCESS, process_token(dead.pid))
    rerun = start(tracker, "k1")
    assert rerun is not None
    statuses = {r.info.run_id: r.info.status for r in job_runs(tracker)}
    assert statuses == {zombie: "KILLED", rerun: "RUNNING"}


def test_a_reused_pid_does_not_pass_for_the_process_that_started_a_run(tracker):
    zombie = start(tracker, "k1")
    pid = process_token().split(":")[0]
    tracker.client.set_tag(zombie, PROCESS, f"{pid}:1")  # this pid, but started at another time
    assert start(tracker, "k1") is not None
    assert tracker.client.get_run(zombie).info.status == "KILLED"


def finish_after_first_read(tracker: Tracker, monkeypatch, run_id: str) -> None:
    """The job's own process finishes ``run_id`` just after another job's first read of the
    store: the interleaving of two identical sweeps started together."""
    read = tracker._job_runs
    reads: list[str] = []

    def racing(condition: str):
        runs = list(read(condition))
        if not reads:
            tracker.client.set_terminated(run_id, "FINISHED")
        reads.append(condition)
        return iter(runs)

    monkeypatch.setattr(tracker, "_job_runs", racing)


def test_a_run_finishing_between_the_two_reads_still_holds_its_job(tracker, monkeypatch):
    running = start(tracker, "k1", skip_taken=False)
    finish_after_first_read(tracker, monkeypatch, running)
    assert start(tracker, "k1") is None
    assert [r.info.status for r in job_runs(tracker)] == ["FINISHED"]


def test_a_run_finished_by_a_process_that_then_ended_is_not_killed(tracker, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    finished = start(tracker, "k1", skip_taken=False)
    tracker.client.set_tag(finished, PROCESS, process_token(dead.pid))
    finish_after_first_read(tracker, monkeypatch, finished)
    assert start(tracker, "k1") is None
    assert [r.info.status for r in job_runs(tracker)] == ["FINISHED"]


class FakeTracker:
    def __init__(self) -> None:
        self.ended: list[str] = []

    def end_sweep(self, run_id: str, status: str) -> None:
        self.ended.append(status)


@pytest.mark.parametrize(
    ("raised", "interrupted", "status"),
    [
        (None, False, "FINISHED"),
        (RuntimeError("a job failed"), False, "FAILED"),
        (KeyboardInterrupt(), True, "KILLED"),
        (SystemExit(1), True, "KILLED"),  # Ctrl-C in training: Lightning's exit(1)
        (SystemExit(1), False, "FAILED"),
        (SystemExit(143), False, "KILLED"),  # SIGTERM
    ],
)
def test_the_sweeps_parent_run_ends_as_the_sweep_did(raised, interrupted, status):
    tracker = FakeTracker()
    if interrupted:
        INTERRUPTED.set()
    try:
        expected = pytest.raises(type(raised)) if raised else contextlib.nullcontext()
        with expected, sweep.closing(tracker, "p"):
            if raised:
                raise raised
    finally:
        INTERRUPTED.clear()
    assert tracker.ended == [status]


class FakeSweeper:
    """Two batches of jobs; the launcher returns each job's result or its exception, as
    Hydra's basic and joblib launchers do."""

    def __init__(self, outcomes: list[list[object]]) -> None:
        self.batches = outcomes
        self.launched: list[str] = []
        self.launcher = SimpleNamespace(launch=self.launch)

    def is_done(self) -> bool:
        return not self.batches

    def get_job_batch(self) -> list[list[str]]:
        return [[f"job={o}"] for o in self.batches[0]]

    def launch(self, batch: list, initial_job_idx: int) -> list:
        outcomes = self.batches.pop(0)
        self.launched += [job[0] for job in batch]
        return [_Return(o) for o in outcomes]


class _Return:
    def __init__(self, outcome: object) -> None:
        self.outcome = outcome

    @property
    def return_value(self) -> object:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_a_job_with_bad_input_does_not_stop_the_others():
    bad = ConfigError("selector.k: 2000 clusters need at least 2000 aux rows")
    sweeper = FakeSweeper([[0.1, bad, 0.3], [0.4]])
    with pytest.raises(ConfigError) as raised:
        sweep.launch(sweeper)
    assert len(sweeper.launched) == 4
    message = str(raised.value)
    assert message.startswith("selector.k: 2000 clusters")
    assert f"in the job job={bad}" in message and "1 of 4 jobs failed" in message


def test_a_failing_job_is_raised_after_the_others_ran():
    sweeper = FakeSweeper([[RuntimeError("exploded"), 0.2]])
    with pytest.raises(RuntimeError, match="exploded"):
        sweep.launch(sweeper)
    assert len(sweeper.launched) == 2


def test_report_on_an_empty_store_file_says_so_and_leaves_it_empty(tmp_path):
    store = tmp_path / "mlruns" / "mlflow.db"
    store.parent.mkdir()
    store.touch()
    with pytest.raises(ConfigError, match="no MLflow store"):
        report_main(["--tracking-dir", str(store.parent), "--out", str(tmp_path / "r.md")])
    assert store.stat().st_size == 0
    assert sorted(p.name for p in store.parent.iterdir()) == ["mlflow.db"]


def test_a_store_named_by_its_uri_creates_no_tracking_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(uri=f"sqlite:///{tmp_path / 'elsewhere' / 'store.db'}")
    tracker.check()
    assert not (tmp_path / "mlruns").exists()
    assert MlflowClient(tracker.uri).search_experiments()


def test_an_unreachable_tracking_server_is_one_error_before_any_work(tmp_path):
    cfg = config(tmp_path, "tracking=server", "tracking.uri=http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="tracking.uri: cannot reach .*make mlflow-server"):
        pipeline.run(cfg)
    assert not (tmp_path / "stages" / "clean_victim").exists()  # nothing was trained


def test_a_sweep_validates_every_job_before_the_first_runs(tmp_path, monkeypatch):
    """The sweeper in-process, as `subpop -m` runs it: one bad value anywhere in the grid
    stops the sweep before any job, store or sweep folder exists."""
    from subpop_runner.__main__ import main

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        ["subpop", "-m", "experiment=smoke_adult", "attack.alpha=1,-1,2", "seed=0,1"],
    )
    with pytest.raises(ConfigError, match=r"attack.alpha: got -1.0.* \(in the job .*-1"):
        main()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no mlruns, multirun, .cache


def test_experiments_open_on_the_runs_table_new_ones_and_ones_made_before(tracker):
    """MLflow 3's UI opens an experiment without `mlflow.experimentKind` on its GenAI view."""
    made_before = tracker.client.create_experiment("older")
    for name in ("older", "new"):
        experiment = tracker.client.get_experiment(tracker.experiment_id(name))
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert tracker.experiment_id("older") == made_before
