"""What every attack returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

    @classmethod
    def empty(cls, input_shape: tuple[int, ...]) -> PoisonSet:
        """No poison: the clean victim's training set is the train split alone."""
        return cls(
            subpop_id=-1,
            x=np.zeros((0, *input_shape), np.float32),
            y=np.zeros(0, np.int64),
            source_index=np.zeros(0, np.int64),
        )
