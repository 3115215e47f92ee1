"""Where an optimised poison point may go: it must stay a valid input.

- Images: every pixel within the valid range (0..255 before scaling) and within ``epsilon``
  of its starting value (L∞, in the same units: 1/510 is half a grey level).
- Tables: every continuous column within the range the attacker sees in D_aux; each one-hot
  group one-hot (its arg-max). No ``epsilon``: a table's columns have no common unit.

Optimisation runs on a *relaxed* copy of the inputs (one-hot groups free in [0, 1]); the model
always sees the projected point, and the gradient passes straight through the projection to
the relaxed copy, so many small steps can move a category (a straight-through estimator).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from subpop_runner.data.images import PIXEL_RANGE
from subpop_runner.types import Splits


@dataclass(frozen=True)
class InputDomain:
    low: Tensor  # per input value, the shape of one row
    high: Tensor
    one_hot: tuple[tuple[int, ...], ...] = ()
    radius: float | None = None  # L∞ distance from the start (images)

    @classmethod
    def of(cls, splits: Splits, epsilon: float) -> InputDomain:
        if len(splits.input_shape) == 3:
            shape = splits.input_shape
            return cls(
                torch.full(shape, PIXEL_RANGE[0]), torch.full(shape, PIXEL_RANGE[1]), (), epsilon
            )
        x = torch.from_numpy(splits.aux.x)
        return cls(x.amin(0), x.amax(0), splits.one_hot)

    def clamp(self, relaxed: Tensor, start: Tensor) -> Tensor:
        """The relaxed points put back in the box (and the ball around ``start``)."""
        low, high = self.low.to(relaxed.device), self.high.to(relaxed.device)
        if self.radius is not None:
            low = torch.maximum(low, start - self.radius)
            high = torch.minimum(high, start + self.radius)
        return torch.minimum(torch.maximum(relaxed, low), high)

    def project(self, relaxed: Tensor) -> Tensor:
        """Valid points: each one-hot group set to its arg-max (the rest is already valid)."""
        points = relaxed.detach().clone()
        for group in self.one_hot:
            columns = list(group)
            chosen = points[:, columns].argmax(1)
            points[:, columns] = torch.nn.functional.one_hot(chosen, len(columns)).to(points)
        return points

    def straight_through(self, relaxed: Tensor) -> Tensor:
        """The projected points, with the gradient of the relaxed ones."""
        return relaxed + (self.project(relaxed) - relaxed).detach()


def distances(poison_x: np.ndarray, source_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far each poison point moved from the aux row it started as: L2 and L∞."""
    if not len(poison_x):  # a budget that rounds to 0 points (α · a tiny cluster)
        return np.zeros(0), np.zeros(0)
    moved = (poison_x - source_x).reshape(len(poison_x), -1).astype(np.float64)
    return np.linalg.norm(moved, axis=1), np.abs(moved).max(axis=1)
