"""Hydra finds sweepers only under the ``hydra_plugins`` namespace: this is subpop_runner's.
The work is done in `subpop_runner.sweep`; see ``conf/hydra/sweeper/subpop.yaml``."""

from __future__ import annotations

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class SubpopSweeper(BasicSweeper):
    """Hydra's basic sweeper that validates every job first, resumes, and closes its parent
    MLflow run."""

    def __init__(
        self, max_batch_size: int | None, params: dict[str, str] | None = None, resume: bool = True
    ) -> None:
        super().__init__(max_batch_size, params)
        self.resume = resume

    def sweep(self, arguments: list[str]) -> Any:
        from subpop_runner.sweep import run_sweep

        return run_sweep(self, arguments)
