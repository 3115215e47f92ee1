"""What every attack returns, and the memory its poison points need."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from subpop_runner.errors import ConfigError


@dataclass(frozen=True)
class PoisonSet:
    """Poison points for one subpopulation, with where each came from.

    ``source_index`` holds the aux-set row each point was drawn from (provenance), so a
    defense report or a reader of ``poison.csv`` can trace every point back.
    """

    subpop_id: int
    x: np.ndarray
    y: np.ndarray
    source_index: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def kept(self, mask: np.ndarray) -> PoisonSet:
        """The points a keep mask leaves (a defense's choice), with their provenance."""
        return PoisonSet(self.subpop_id, self.x[mask], self.y[mask], self.source_index[mask])

    @classmethod
    def empty(cls, input_shape: tuple[int, ...]) -> PoisonSet:
        """No poison: the clean victim's training set is the train split alone."""
        return cls(
            subpop_id=-1,
            x=np.zeros((0, *input_shape), np.float32),
            y=np.zeros(0, np.int64),
            source_index=np.zeros(0, np.int64),
        )


def check_memory(budgets: Sequence[int], row_bytes: int, memory_mb: float) -> None:
    """Raise `ConfigError` before any poison point exists unless they fit: one victim's poison
    rows within the memory budget of a chunk of victims (``training.memory_mb``: a chunk holds
    at least one victim), and every subpopulation's together, as the pipeline holds them,
    within the memory this machine has available. ``attack.alpha=1e9`` is refused here
    instead of growing until the kernel kills the job."""
    if not budgets:
        return
    largest, total = max(budgets) * row_bytes, sum(budgets) * row_bytes
    if largest > memory_mb * 2**20:
        raise ConfigError(
            f"attack.alpha: one subpopulation's {max(budgets):,} poison points need "
            f"{_size(largest)} ({row_bytes:,} B each), beyond the memory budget of one victim "
            f"(training.memory_mb={memory_mb:g} MiB); lower attack.alpha, or raise "
            "training.memory_mb"
        )
    available = _available_memory()
    if total > available:
        raise ConfigError(
            f"attack.alpha: the {len(budgets)} subpopulations' {sum(budgets):,} poison points "
            f"need {_size(total)} together, more than the {_size(available)} of memory "
            "available here; lower attack.alpha, or attack fewer subpopulations (selector.take)"
        )


def _available_memory() -> int:
    """Bytes the kernel can give without swapping (Linux's MemAvailable; else all RAM)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TiB"
