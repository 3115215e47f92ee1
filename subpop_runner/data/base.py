"""What every dataset is to the runner (what ``conf/dataset/<name>.yaml``'s ``_target_``
builds): step 1 of the experiment, and what its results are keyed by."""

from __future__ import annotations

from abc import ABC, abstractmethod

from subpop_runner.types import Splits


class Dataset(ABC):
    """A dataset's files, checked and cut into the experiment's three parts."""

    @abstractmethod
    def load(self, seed: int) -> Splits:
        """Read and verify the files (`ConfigError` naming the fix when they are missing or
        wrong) and cut disjoint train / aux / test parts with ``seed``."""

    @abstractmethod
    def fingerprint(self) -> dict[str, str]:
        """SHA-256 of each file `load` reads, by name: what the stage cache, the job key and
        resume hash in place of the paths, so files changed or restored in place count."""
