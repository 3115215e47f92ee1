"""What a multirun promises, on top of Hydra's basic sweeper (``hydra/sweeper=subpop``):

1. Every job's config is composed and validated before the first job starts: one bad value
   anywhere in the grid stops the sweep with its `error:` line naming the job, and nothing
   runs (a key Hydra could not set on the sweep's shared config is checked in each job:
   `defer_keys`).
2. Resume: a job whose identity (`identity.job_key`) already has a FINISHED run in the
   tracking store, or a RUNNING one in a live process, is skipped, both when the sweep starts
   and again when the job itself starts (two identical sweeps started together run each job
   once); a run left RUNNING by a process that is gone is closed KILLED.
   ``hydra.sweeper.resume=false`` recomputes everything.
3. One parent MLflow run per sweep command, named after the sweep config and its axes, that
   ends FINISHED, FAILED (a job failed) or KILLED (Ctrl-C, SIGTERM), never RUNNING.

Jobs run through whichever Hydra launcher is configured (basic, joblib, submitit). With the
basic and joblib launchers a failing job does not stop the others: they all run, its run ends
FAILED with the reason (bad input seen only once the data are loaded, such as k larger than
the aux set, included), then the sweep ends FAILED and exits non-zero (2 when every failure
was bad input); rerunning the command runs only what did not finish.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, read_write

from subpop_runner.errors import INTERRUPTED, ConfigError, other_writers
from subpop_runner.identity import job_key
from subpop_runner.schema import explain, resolve_paths, validate
from subpop_runner.tracking import (
    AXES_ENV,
    EXPERIMENT_ENV,
    PARENT_ENV,
    RESUME_ENV,
    experiment_name,
    sweep_experiment,
)

log = logging.getLogger(__name__)
# Set by the CLI once Hydra could not compose a multirun's shared config: the key overrides it
# took out of the command line (`defer_keys`), for the sweeper to compose into every job,
# launching nothing (`check_jobs`).
CHECK_ENV = "SUBPOP_SWEEP_CHECK"


def run_sweep(sweeper: Any, arguments: list[str]) -> list:
    """The sweep itself: expand, validate, skip finished jobs, launch, close the parent."""
    from hydra.utils import instantiate

    params = sweeper._parse_config() + list(arguments)
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    parsed = parser.parse_overrides(params)
    jobs = [job for batch in sweeper.split_arguments(parsed, None) for job in batch]
    axes = [o.get_key_element() for o in in_effect(parsed) if o.is_sweep_override()]
    if CHECK_ENV in os.environ:
        check_jobs(sweeper, jobs, json.loads(os.environ[CHECK_ENV]))
        return []
    configs = [compose_job(sweeper, job) for job in jobs]
    tracker = instantiate(sweeper.config.tracking)
    tracker.check()

    todo = unfinished(jobs, configs, tracker) if sweeper.resume else jobs
    if not todo:
        log.info("nothing to run: every job of this sweep has finished")
        return []

    hydra_cfg = sweeper.config.hydra
    sweep_dir = Path(hydra_cfg.sweep.dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(sweeper.config, sweep_dir / "multirun.yaml")
    experiment = sweep_experiment(
        [experiment_name(c) for c in configs], sweeper.config.hydra.job.config_name
    )
    parent = tracker.start_sweep(
        experiment,
        sweep_name(hydra_cfg.job.config_name, parsed),
        sweep_dir=str(sweep_dir),
        jobs=len(todo),
    )
    with read_write(hydra_cfg):
        hydra_cfg.overrides.hydra.extend(
            [
                f"+hydra.job.env_set.{PARENT_ENV}={parent}",
                f"+hydra.job.env_set.{EXPERIMENT_ENV}={experiment}",
                f"+hydra.job.env_set.{AXES_ENV}='{','.join(axes)}'",
                f"+hydra.job.env_set.{RESUME_ENV}='{str(sweeper.resume).lower()}'",
            ]
        )
    sweeper.overrides = list(sweeper.split_overrides_to_chunks(todo, sweeper.max_batch_size))
    with closing(tracker, parent):
        return launch(sweeper)


@contextlib.contextmanager
def closing(tracker: Any, parent: str) -> Iterator[None]:
    """The parent run ends FINISHED, FAILED (a job failed), or KILLED: Ctrl-C (also when
    Lightning has turned it into ``exit(1)`` during training) or a signal (128 + n)."""
    try:
        yield
    except KeyboardInterrupt:
        tracker.end_sweep(parent, "KILLED")
        raise
    except SystemExit as stop:
        killed = INTERRUPTED.is_set() or (stop.code or 0) >= 128
        tracker.end_sweep(parent, "KILLED" if killed else "FAILED")
        raise
    except BaseException:
        tracker.end_sweep(parent, "FAILED")
        raise
    tracker.end_sweep(parent, "FINISHED")


def unfinished(jobs: list[list[str]], configs: list[DictConfig], tracker: Any) -> list:
    """The jobs whose identity has no FINISHED run, nor a RUNNING one in a live process, in
    the store (resume); runs left RUNNING by a dead process are closed KILLED on the way."""
    from hydra.utils import instantiate

    keys = [job_key(c, instantiate(c.dataset).fingerprint()) for c in configs]
    taken = tracker.taken(set(keys))
    todo = [job for job, key in zip(jobs, keys, strict=True) if key not in taken]
    if len(todo) < len(jobs):
        running = sum("RUNNING" in reason for reason in taken.values())
        log.info(
            "resume: %d of %d jobs already have a FINISHED run in %s%s and are skipped "
            "(hydra.sweeper.resume=false recomputes them)",
            len(jobs) - len(todo),
            len(jobs),
            tracker.uri,
            f" or one RUNNING in a live process ({running})" if running else "",
        )
    return todo


def compose_job(sweeper: Any, overrides: list[str]) -> DictConfig:
    """One job's config as the launcher will compose it, validated; a bad key or value stops
    the sweep naming the job."""
    try:
        cfg = sweeper.hydra_context.config_loader.load_sweep_config(
            sweeper.config, list(overrides)
        )
        validate(cfg)
    except Exception as error:
        message = explain(error)
        if message is None:
            raise
        raise ConfigError(f"{message} (in the job {' '.join(overrides)})") from None
    resolve_paths(cfg)
    return cfg


def defer_keys(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` less its overrides that set a dotted key to one value, and those overrides.
    Hydra applies them to a multirun's shared config, composed before the axes, with each
    swept group at its default option: a key that only the jobs' options have, or a typo,
    fails there, naming no job. Composed into each job instead (`check_jobs`), it fails naming
    the job and that job's keys."""
    from hydra._internal.utils import get_args_parser

    overrides = get_args_parser().parse_args(argv).overrides
    deferred = [
        o.input_line
        for o in OverridesParser.create().parse_overrides(overrides)
        if "." in o.key_or_group and not (o.is_sweep_override() or o.is_hydra_override())
    ]
    return [a for a in argv if a not in deferred], deferred


def check_jobs(sweeper: Any, jobs: list[list[str]], deferred: list[str]) -> None:
    """Compose and validate every job with the ``deferred`` overrides; the first bad job
    raises its `ConfigError`."""
    for job in jobs:
        compose_job(sweeper, [*job, *deferred])


def launch(sweeper: Any) -> list:
    """Hydra's basic sweeper loop: each batch through the launcher; then, if jobs failed, one
    error for all of them (a `ConfigError` when every one was bad input)."""
    returns, first, failures = [], 0, []
    while not sweeper.is_done():
        batch = sweeper.get_job_batch()
        results = sweeper.launcher.launch(batch, initial_job_idx=first)
        for overrides, result in zip(batch, results, strict=True):
            try:
                _ = result.return_value  # raises the job's exception if it failed
            except Exception as error:
                failures.append((" ".join(overrides), error))
        first += len(batch)
        returns.append(results)
    if failures:
        other_writers()  # a launcher's workers (joblib) drew their bars on this stderr too
        job, error = failures[0]
        if all(isinstance(e, ConfigError) for _, e in failures):
            raise ConfigError(
                f"{error} (in the job {job}; {len(failures)} of {first} jobs failed with bad "
                "input, the others ran; rerunning the sweep runs only what did not finish)"
            )
        raise error
    return returns


def in_effect(parsed: list) -> list:
    """One override per key: the last one given, as the basic sweeper applies them (a sweep
    file's axis that the command line sets again, swept or fixed, is the command line's)."""
    last = {o.get_key_element(): o for o in parsed}
    return list(last.values())


def sweep_name(config_name: str, parsed: list) -> str:
    """``<sweep config>: <axis>=<values> ...`` for the parent run."""
    axes = [
        f"{o.get_key_element()}={','.join(str(v) for v in o.sweep_string_iterator())}"
        for o in in_effect(parsed)
        if o.is_sweep_override() and o.is_discrete_sweep()
    ]
    return f"{config_name}: {' '.join(axes)}" if axes else config_name
