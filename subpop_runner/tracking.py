"""MLflow: the only module that imports it.

One MLflow experiment per experiment config (``cfg.name``); one run per Hydra job; the jobs of
a multirun are children (tag ``mlflow.parentRunId``) of one parent run per sweep directory.
Runs are made with `MlflowClient`, never the fluent API, because Hydra's default launcher runs
every job in one process and the fluent active-run stack would leak between jobs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock
from hydra.experimental.callback import Callback

from subpop_runner.errors import ConfigError

ROLE, SWEEP_DIR = "subpop.role", "subpop.sweep_dir"
MAX_PARAM_LENGTH = 6000


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
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            if self.local:
                self.dir.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def check(self) -> None:
        """Fail fast, with the fix, if the tracking store cannot be reached."""
        try:
            with _quick_http(self.timeout_s):
                self.client.search_experiments(max_results=1)
        except Exception as error:  # MLflow raises several types for the same cause
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else error
            raise ConfigError(
                f"cannot reach the MLflow tracking store {self.uri!r} ({first_line}). Start the "
                "server, or set tracking.uri to a reachable URI (tracking.uri=null uses SQLite "
                f"under tracking.dir={self.dir})."
            ) from error

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (self.dir / "artifacts" / name).as_uri() if self.local else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # created meanwhile by a parallel job
            return self.client.get_experiment_by_name(name).experiment_id

    @contextlib.contextmanager
    def job_run(
        self,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any],
        sweep_dir: str | None = None,
    ) -> Iterator[JobRun]:
        """A run for one job; FINISHED on success, FAILED (and its parent too) on error."""
        experiment_id = self.experiment_id(experiment)
        tags = {ROLE: "job"}
        if sweep_dir is not None:
            tags |= {
                "mlflow.parentRunId": self._parent(experiment_id, sweep_dir),
                SWEEP_DIR: sweep_dir,
            }
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        job = JobRun(self.client, run.info.run_id)
        job.log_params(params)
        try:
            yield job
        except BaseException:
            self.client.set_terminated(job.run_id, "FAILED")
            if sweep_dir is not None:
                self.client.set_terminated(tags["mlflow.parentRunId"], "FAILED")
            raise
        self.client.set_terminated(job.run_id, "FINISHED")

    def _parent(self, experiment_id: str, sweep_dir: str) -> str:
        """The sweep's parent run, made by whichever job gets there first."""
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        with FileLock(str(Path(sweep_dir) / ".mlflow_parent.lock")):
            found = self.sweep_parents(sweep_dir, [experiment_id])
            if found:
                return found[0].info.run_id
            run = self.client.create_run(
                experiment_id,
                run_name=f"sweep {Path(sweep_dir).name}",
                tags={ROLE: "sweep", SWEEP_DIR: sweep_dir},
            )
            return run.info.run_id

    def sweep_parents(self, sweep_dir: str, experiment_ids: list[str] | None = None) -> list:
        if experiment_ids is None:
            experiment_ids = [e.experiment_id for e in self.client.search_experiments()]
        path = sweep_dir.replace("'", "\\'")
        return self.client.search_runs(
            experiment_ids,
            filter_string=f"tags.`{SWEEP_DIR}` = '{path}' and tags.`{ROLE}` = 'sweep'",
        )

    def finish_sweep(self, sweep_dir: str) -> None:
        for run in self.sweep_parents(sweep_dir):
            if run.info.status == "RUNNING":
                self.client.set_terminated(run.info.run_id, "FINISHED")

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
        """Whether a store is there to read, asked without creating one (the client would):
        a local SQLite file must exist; a server is asked by `check`."""
        return not self.local or Path(self.uri.removeprefix("sqlite:///")).is_file()

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
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=items)

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


class CloseSweepRuns(Callback):
    """Hydra callback: when a multirun ends, mark its parent run(s) FINISHED."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from hydra.utils import instantiate

        tracker = instantiate(config.tracking)
        tracker.finish_sweep(str(Path(config.hydra.sweep.dir).resolve()))
