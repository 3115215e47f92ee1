"""`subpop` / `python -m subpop_runner`: the Hydra app, plus `subpop report`."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from subpop_runner.errors import ConfigError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from subpop_runner import pipeline

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    sweep_dir = str(Path(hydra_cfg.sweep.dir).resolve()) if multirun else None
    run_name = hydra_cfg.job.override_dirname or cfg.name
    try:
        result = pipeline.run(cfg, run_name=run_name, sweep_dir=sweep_dir)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return result.summary["target_damage/worst5"]


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM (a scheduler's kill, `timeout`) into SystemExit so the job's MLflow run is
    marked FAILED instead of staying RUNNING."""
    raise SystemExit(128 + signum)


def cli() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        from subpop_runner.report import main as report_main

        try:
            report_main(sys.argv[2:])
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        return
    main()


if __name__ == "__main__":
    cli()
