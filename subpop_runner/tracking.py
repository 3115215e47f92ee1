"""MLflow: the only module that imports it.

One MLflow experiment per experiment (`experiment_name`); one run per Hydra job, tagged with
Hydra's runtime choices and its identity (``subpop.job_key``, used to resume sweeps); the jobs
of a multirun are children (tag ``mlflow.parentRunId``) of one parent run per sweep command,
which `subpop_runner.sweep` opens and closes.
Runs are made with `MlflowClient`, never the fluent API, because Hydra's default launcher runs
every job in one process and the fluent active-run stack would leak between jobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from subpop_runner.errors import ConfigError

ROLE, SWEEP_DIR, JOB_KEY = "subpop.role", "subpop.sweep_dir", "subpop.job_key"
# Where a job's process runs (so a later sweep can tell a live run from one left RUNNING by a
# SIGKILL), and why a job failed.
HOST, PROCESS, ERROR = "subpop.host", "subpop.process", "subpop.error"
# The groups that say what an experiment is; trainer, tracking and size say how it ran.
NAMING_GROUPS = ("dataset", "model", "selector", "attack")
# How a sweep job learns its parent run and experiment, axes and whether to skip work done
# elsewhere: the sweeper has Hydra set these around it.
PARENT_ENV, EXPERIMENT_ENV, AXES_ENV, RESUME_ENV = (
    "SUBPOP_SWEEP_RUN_ID",
    "SUBPOP_SWEEP_EXPERIMENT",
    "SUBPOP_SWEEP_AXES",
    "SUBPOP_SWEEP_RESUME",
)
# Experiments open in MLflow 3's UI on its runs table (a table of runs to compare), not on its
# GenAI view (traces), which it picks for an experiment without this tag.
EXPERIMENT_KIND, RUNS_TABLE = "mlflow.experimentKind", "custom_model_development"
MAX_PARAM_LENGTH = 6000
# MLflow announces creating and migrating a new SQLite store at INFO on stderr; an `error:`
# line must stand alone there.
for _chatty in ("mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(_chatty).setLevel(logging.WARNING)
log = logging.getLogger(__name__)


class Tracker:
    """Where runs go: ``uri`` (any MLflow tracking URI), else SQLite under ``dir``."""

    def __init__(self, *, uri: str | None = None, dir: str = "mlruns", timeout_s: float = 10):
        self.dir = Path(dir).expanduser().resolve()
        self.uri = uri or f"sqlite:///{self.dir / 'mlflow.db'}"
        self.timeout_s = timeout_s
        self._client = None

    @property
    def local(self) -> bool:
        return self.uri.startswith("sqlite:")

    @property
    def store_dir(self) -> Path:
        """The folder of a local SQLite store (``tracking.uri`` may name one elsewhere)."""
        return Path(self.uri.removeprefix("sqlite:///")).parent if self.local else self.dir

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            if not self.local:
                self._client = MlflowClient(tracking_uri=self.uri)
                return self._client
            # Processes that open a new SQLite store at once race to create its tables (two
            # sweeps started together, parallel jobs): the first creates them, the rest wait.
            self.store_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(_lock_path(self.uri)):
                client = MlflowClient(tracking_uri=self.uri)
                client.search_experiments(max_results=1)
            self._client = client
        return self._client

    def check(self) -> None:
        """Fail fast, with the fix, if the tracking store cannot be written or reached."""
        if self.local:
            try:
                self.store_dir.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=self.store_dir):
                    pass
            except OSError as error:
                raise ConfigError(
                    f"tracking.dir: cannot write the MLflow store folder {self.store_dir} "
                    f"({error.strerror or error}); valid: a writable folder, e.g. "
                    "tracking.dir=mlruns"
                ) from None
        self.reachable()

    def reachable(self) -> None:
        """Raise `ConfigError`, with the fix, unless the store answers a read."""
        try:
            with _quick_http(self.timeout_s):
                self.client.search_experiments(max_results=1)
        except Exception as error:  # MLflow raises several types for the same cause
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else error
            fix = (
                "start the server (e.g. make mlflow-server), or set tracking.uri=null to use "
                f"SQLite under tracking.dir={self.dir}"
                if not self.local
                else "check the file is an MLflow SQLite store, or choose another tracking.dir"
            )
            raise ConfigError(
                f"tracking.uri: cannot reach the MLflow tracking store {self.uri!r} "
                f"({first_line}); {fix}"
            ) from error

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND) != RUNS_TABLE:  # made before the tag
                self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, RUNS_TABLE)
            return found.experiment_id
        location = (self.dir / "artifacts" / name).as_uri() if self.local else None
        try:
            return self.client.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND: RUNS_TABLE}
            )
        except Exception:  # created meanwhile by a parallel job
            return self.client.get_experiment_by_name(name).experiment_id

    def start_job(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        skip_taken: bool = False,
    ) -> str | None:
        """A new RUNNING run for one job, tagged with this process; None, creating nothing,
        when ``skip_taken`` and a run of the same identity (tag ``subpop.job_key``) has
        FINISHED or is RUNNING in a live process (two identical sweeps started together run
        each job once). Checking and creating hold one lock, so two jobs cannot both pass."""
        tags = {ROLE: "job", HOST: socket.gethostname(), PROCESS: process_token(), **tags}
        if parent_run_id is not None:
            tags["mlflow.parentRunId"] = parent_run_id
        with self._claim_lock():
            if skip_taken:
                taken = self.taken({tags[JOB_KEY]}).get(tags[JOB_KEY])
                if taken is not None:
                    log.info("skipped: a run of this job %s", taken)
                    return None
            run = self.client.create_run(
                self.experiment_id(experiment), run_name=run_name, tags=tags
            )
        return run.info.run_id

    @contextlib.contextmanager
    def job_run(self, run_id: str, params: Mapping[str, Any]) -> Iterator[JobRun]:
        """Logging into a job's run: FINISHED on success, KILLED when interrupted (Ctrl-C,
        SIGTERM), FAILED on any other error, with the reason in tag ``subpop.error``."""
        job = JobRun(self.client, run_id)
        try:
            job.log_params(params)
            yield job
        except (KeyboardInterrupt, SystemExit):
            self.client.set_terminated(run_id, "KILLED")
            raise
        except BaseException as error:
            self.client.set_tag(run_id, ERROR, f"{type(error).__name__}: {error}"[:5000])
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    def failed_run(
        self,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        parent_run_id: str,
        error: Exception,
    ) -> None:
        """A sweep job's bad input, found once its data were loaded (k larger than the aux
        set): a FAILED run that says why, so the sweep's record has every job."""
        run_id = self.start_job(experiment, run_name, tags, parent_run_id)
        with contextlib.suppress(type(error)), self.job_run(run_id, params):
            raise error

    def taken(self, keys: set[str]) -> dict[str, str]:
        """For each job key with a FINISHED run, or a RUNNING one whose process lives, what
        holds it. A RUNNING run whose process is gone (SIGKILL, a crash) is closed KILLED on
        the way: the store keeps no zombies. A run on another host cannot be checked and
        counts as live."""
        holders: dict[str, str] = {}
        # One job asks for its own key only; a sweep's many keys are read in one pass.
        only = f" and tags.`{JOB_KEY}` = '{next(iter(keys))}'" if len(keys) == 1 else ""
        # RUNNING first: a run only moves from RUNNING to FINISHED, so one that finishes
        # between the two reads is seen in one of them (the other order can miss it).
        for run in self._job_runs(f"attributes.status = 'RUNNING'{only}"):
            key = run.data.tags.get(JOB_KEY)
            if key not in keys or key in holders:
                continue
            if is_live(run.data.tags):
                where = run.data.tags.get(HOST, "an unknown host")
                holders[key] = f"is RUNNING on {where} (run {run.info.run_id})"
            # Read again once its process is known dead: it may have finished the run
            # just before it ended, and a dead process changes it no more.
            elif self.client.get_run(run.info.run_id).info.status == "RUNNING":
                log.info(
                    "run %s was left RUNNING by a process that is gone: marked KILLED",
                    run.info.run_id,
                )
                self.client.set_terminated(run.info.run_id, "KILLED")
        for run in self._job_runs(f"attributes.status = 'FINISHED'{only}"):
            key = run.data.tags.get(JOB_KEY)
            if key in keys and key not in holders:
                holders[key] = f"has FINISHED (run {run.info.run_id})"
        return holders

    def _job_runs(self, condition: str) -> Iterator[Any]:
        """Every job run of the store that meets ``condition`` (an MLflow filter)."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        if not experiments:
            return
        token = None
        while True:
            page = self.client.search_runs(
                experiments,
                filter_string=f"tags.`{ROLE}` = 'job' and {condition}",
                max_results=1000,
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                return

    def _claim_lock(self) -> contextlib.AbstractContextManager:
        """Jobs of one SQLite store claim their identity one at a time; a server's jobs may
        run on several machines, where no file lock reaches."""
        if self.local:
            return FileLock(_lock_path(self.uri) + ".claim")
        return contextlib.nullcontext()

    def start_sweep(self, experiment: str, name: str, sweep_dir: str, jobs: int) -> str:
        """The parent run of one sweep command; its jobs name it as their parent."""
        run = self.client.create_run(
            self.experiment_id(experiment),
            run_name=name,
            tags={ROLE: "sweep", SWEEP_DIR: sweep_dir, "subpop.jobs": str(jobs)},
        )
        return run.info.run_id

    def end_sweep(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def job_runs(self, experiment: str) -> pd.DataFrame:
        """Finished job runs of an experiment: one row, columns ``params.*``/``metrics.*``."""
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            raise ConfigError(f"no MLflow experiment named {experiment!r} at {self.uri}")
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        return mlflow.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{ROLE}` = 'job' and attributes.status = 'FINISHED'",
        )

    def report_run(
        self, files: list[Path], *, covers: list[str], experiment: str = "reports"
    ) -> str:
        """Store a report's files as artifacts of a new run in the experiment ``reports``.

        Not in the jobs' experiment: a report run has no params or metrics, so the UI would show
        it as an empty row among the job runs and in their charts. One experiment for all
        reports rather than ``<experiment>.report`` each, because one report covers several
        experiments (tag ``subpop.report_of`` names them).
        """
        run = self.client.create_run(
            self.experiment_id(experiment),
            run_name=f"report {', '.join(covers)}",
            tags={ROLE: "report", "subpop.report_of": ", ".join(covers)},
        )
        for path in files:
            self.client.log_artifact(run.info.run_id, str(path))
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def store_exists(self) -> bool:
        """Whether a store is there to read, asked without creating one (the client would,
        in an empty file too): a local SQLite file must exist and hold something; a server
        is asked by `check`."""
        if not self.local:
            return True
        path = Path(self.uri.removeprefix("sqlite:///"))
        return path.is_file() and path.stat().st_size > 0

    def experiments_with_jobs(self) -> list[str]:
        """Names of the experiments holding at least one finished job run, sorted."""
        return sorted(
            e.name
            for e in self.client.search_experiments()
            if self.client.search_runs(
                [e.experiment_id],
                filter_string=f"tags.`{ROLE}` = 'job' and attributes.status = 'FINISHED'",
                max_results=1,
            )
        )


class JobRun:
    """Logging into one run."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self._log_metrics([(k, v, 0) for k, v in metrics.items()])

    def log_series(self, key: str, values: Sequence[float]) -> None:
        """One metric over steps 0, 1, …: a curve in the MLflow UI."""
        self._log_metrics([(key, v, step) for step, v in enumerate(values)])

    def _log_metrics(self, points: Sequence[tuple[str, float, int]]) -> None:
        """(key, value, step) points, in MLflow's batches of at most 1,000."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(v), now, step) for key, v, step in points]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_files(self, files: Mapping[str, str | bytes | pd.DataFrame]) -> None:
        """Write each named content to a file and store it as an artifact."""
        with tempfile.TemporaryDirectory() as folder:
            for name, content in files.items():
                path = Path(folder) / name
                if isinstance(content, pd.DataFrame):
                    content.to_csv(path, index=False)
                elif isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content)
                self.client.log_artifact(self.run_id, str(path))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping to ``{"a.b.c": value}`` (lists stay whole values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def _lock_path(uri: str) -> str:
    """A lock file for a store, outside it (a report on a store must leave it as it was)."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return str(Path(tempfile.gettempdir()) / f"subpop_runner-store-{digest}.lock")


@contextlib.contextmanager
def _quick_http(timeout_s: float) -> Iterator[None]:
    """MLflow retries HTTP calls for minutes by default; a reachability check should not."""
    settings = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s)),
    }
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def experiment_name(cfg: Any) -> str:
    """The MLflow experiment a job logs to: the preset's ``name``, unless the command line
    changed one of the preset's `NAMING_GROUPS` (then a name made of those choices), with a
    non-default defense's name appended (and ``_warm`` when its rounds are warm-started: they
    may select other rows, so those runs are kept apart from the from-scratch ones), and
    ``_smoke`` for every smoke size (``smoke``, ``smoke_text``, ``smoke_ft``). Reads Hydra's
    runtime choices where there are any (a composed config outside a Hydra app has none: then
    ``name`` or ``default``)."""
    hydra = cfg.get("hydra") if "hydra" in cfg else None
    if hydra is None:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get() if HydraConfig.initialized() else None
    choices = dict(hydra.runtime.choices) if hydra is not None else {}
    overridden = {o.split("=")[0].lstrip("+~") for o in (hydra.overrides.task if hydra else [])}
    derived = "_".join(str(choices.get(g)) for g in NAMING_GROUPS)
    if choices and (cfg.name is None or overridden & set(NAMING_GROUPS)):
        base = derived
    else:
        base = cfg.name or "default"
    defense = choices.get("defense", "none")
    if defense != "none":
        base = f"{base}_{defense}"
        if (cfg.get("defense") or {}).get("warm_start", False):
            base = f"{base}_warm"
    smoke = str(choices.get("size", "")).startswith("smoke")  # smoke, smoke_text, smoke_ft
    return f"{base}_smoke" if smoke else base


def sweep_experiment(names: Sequence[str], config_name: str) -> str:
    """The one experiment a sweep's jobs log to, under its parent run, from each job's own
    `experiment_name`: theirs when they share it; else the sweep file's name
    (``sweeps/adult_defenses.yaml`` over four defenses logs to ``adult_defenses``), or, for a
    sweep of the command line alone, the words the names share (``-m defense=none,trim`` on
    ``adult_cluster_match`` logs there); ``_smoke`` kept when every job is a smoke run. The
    report tells the jobs apart by their settings."""
    if len(set(names)) == 1:
        return names[0]
    words = [name.split("_") for name in names]
    smoke = all(w[-1] == "smoke" for w in words)
    if config_name != "config":
        return f"{config_name}_smoke" if smoke else config_name
    common = []
    for column in zip(*words, strict=False):
        if len(set(column)) > 1:
            break
        common.append(column[0])
    smoke = smoke and common[-1:] != ["smoke"]
    return "_".join(common + ["smoke"] * smoke) or names[0]


def choice_tags(cfg: Any) -> dict[str, str]:
    """Hydra's runtime choices of the experiment's own groups, as ``choice.<group>`` tags."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {f"choice.{k}": str(v) for k, v in choices.items() if "/" not in k}


def process_token(pid: int | None = None) -> str:
    """``<pid>:<start time>`` of a process (Linux's /proc; elsewhere the pid alone): a pid
    reused by a later process does not pass for the one that started a run."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid) or ''}"


def is_live(tags: Mapping[str, str]) -> bool:
    """Whether the process a run's tags name still runs (a run of another host, or without
    the tags, cannot be checked: taken as live)."""
    if tags.get(HOST) != socket.gethostname() or PROCESS not in tags:
        return True
    pid, _, started = tags[PROCESS].partition(":")
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    return not started or _start_time(int(pid)) == started


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


@dataclass(frozen=True)
class JobInfo:
    """Where and under what name one job logs: its experiment, run name, tags and parent;
    ``resume``: a sweep's job that skips itself when its identity is already taken."""

    experiment: str
    run_name: str
    tags: dict[str, str]
    parent_run_id: str | None = None
    resume: bool = False


def job_info(cfg: Any, path_keys: list[str]) -> JobInfo:
    """A job's `JobInfo` from its config, Hydra's runtime state and the sweep's variables.
    A sweep job is named by its swept values, a single run by its command-line overrides;
    paths (``path_keys``) never go into a name."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    experiment = os.environ.get(EXPERIMENT_ENV) or experiment_name(cfg)
    parent = os.environ.get(PARENT_ENV)
    if parent is not None:
        choices = HydraConfig.get().runtime.choices
        axes = [a for a in os.environ.get(AXES_ENV, "").split(",") if a]
        name = ", ".join(
            f"{a}={choices[a] if a in choices else OmegaConf.select(cfg, a)}" for a in axes
        )
    elif HydraConfig.initialized():
        overrides = HydraConfig.get().overrides.task
        name = ", ".join(o for o in overrides if o.split("=")[0].lstrip("+~") not in path_keys)
    else:
        name = ""
    resume = parent is not None and os.environ.get(RESUME_ENV) == "true"
    return JobInfo(experiment, name or experiment, choice_tags(cfg), parent, resume)
