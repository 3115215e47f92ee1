"""`subpop` / `python -m subpop_runner`: the Hydra app, plus `subpop report` and the paper's
negative results about defenses, `subpop figure2` and `subpop theorem71`.

Bad input of any kind (an unknown group option or key, a value of the wrong type or out of
range, a missing file, an unreachable store) ends as one ``error: <key>: <problem>; <fix>``
line with exit code 2, before any MLflow run exists; Ctrl-C ends the run KILLED, exit 130.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from subpop_runner import schema
from subpop_runner.errors import INTERRUPTED, ConfigError, print_alone, print_error, track_stderr

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    import logging

    from subpop_runner import pipeline
    from subpop_runner.tracking import job_info

    job = None
    try:
        schema.validate(cfg)  # a multirun's jobs were validated by the sweeper already
        schema.resolve_paths(cfg)
        path_keys = schema.keys_where(cfg, lambda meta: meta.get("path", False))
        job = job_info(cfg, path_keys)
        result = pipeline.run(cfg, job)
    except ConfigError as error:
        if job is not None and job.parent_run_id is not None:
            # A sweep's job: its run is FAILED with the reason; the launcher goes on with the
            # other jobs and the sweep reports every failure at the end.
            logging.getLogger(__name__).error("this job's input is bad: %s", error)
            raise
        # SystemExit, not an exception: Hydra would add its own "Error executing job" line.
        print_error(str(error))
        raise SystemExit(2) from None
    return float("nan") if result is None else result.summary["target_damage/worst5"]


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler's kill, `timeout`) as SystemExit: the run ends KILLED."""
    raise SystemExit(128 + signum)


def _on_sigint(signum: int, frame: object) -> None:
    """Remember Ctrl-C: Lightning turns it into ``exit(1)`` during training."""
    INTERRUPTED.set()
    raise KeyboardInterrupt


def cli() -> None:
    track_stderr()  # so that a last line after a progress bar starts a line of its own
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGINT, _on_sigint)
    # Hydra then raises composition errors instead of printing them and exiting 1, so that
    # they end as one `error:` line and exit code 2 like every other bad input.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        command = sys.argv[1] if len(sys.argv) > 1 else None
        if command == "report":
            from subpop_runner.report import main as report_main

            report_main(sys.argv[2:])
        elif command in ("figure2", "theorem71"):
            from subpop_runner.defenses import impossibility

            getattr(impossibility, f"main_{command}")(sys.argv[2:])
        else:
            main()
    except (KeyboardInterrupt, SystemExit) as stop:
        if isinstance(stop, SystemExit) and not INTERRUPTED.is_set():
            raise
        print_alone("interrupted: the running MLflow run is marked KILLED")
        raise SystemExit(130) from None
    except Exception as error:
        message = schema.explain(error)
        if message is None:
            raise
        if _is_shared_config_key_error(error):
            message = _check_jobs_instead(message)
        print_error(message)
        raise SystemExit(2) from None


def _is_shared_config_key_error(error: Exception) -> bool:
    """Whether Hydra could not set a key on a multirun's shared config (see `sweep.defer_keys`):
    that config has each swept group at its default option, so its error can name the wrong
    option's keys, and names no job."""
    from hydra._internal.utils import get_args_parser
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    return (
        isinstance(error, ConfigCompositionException)
        and isinstance(error.__cause__, ConfigKeyError | ConfigAttributeError)
        and get_args_parser().parse_args(sys.argv[1:]).multirun
    )


def _check_jobs_instead(message: str) -> str:
    """The multirun again, with its key overrides composed into every job rather than into the
    shared config, the sweeper checking each job and launching none: the first bad job's
    error, naming it; or, when every job takes the key that failed (``message``'s), how to set
    it past the shared config."""
    from subpop_runner import sweep

    argv = sys.argv
    kept, deferred = sweep.defer_keys(argv[1:])
    key = message.partition(":")[0]
    failed = [o for o in deferred if o.partition("=")[0].lstrip("+~") == key]
    if not failed:  # a top-level key: the same in every job, and its message says it all
        return message
    sys.argv = [argv[0], *kept]
    os.environ[sweep.CHECK_ENV] = json.dumps(deferred)
    try:
        main()
    except Exception as error:
        return schema.explain(error) or message
    finally:
        sys.argv = argv
        del os.environ[sweep.CHECK_ENV]
    return (
        f"{key}: every job of this multirun has this key, but Hydra sets it first on the "
        "multirun's shared config, which has each swept group at its default option and lacks "
        f"it; write ++{failed[-1].lstrip('+')} (each job still checks it)"
    )


if __name__ == "__main__":
    cli()
