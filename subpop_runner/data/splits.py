"""The three disjoint parts of every experiment (paper Sec. 5: D, D_aux, D_test)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Part:
    """One split: features ``x`` (float32), labels ``y`` (int64), optional annotations."""

    x: np.ndarray
    y: np.ndarray
    annotations: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    """The victim's training set, the attacker's auxiliary set and the test set."""

    train: Part
    aux: Part
    test: Part
    class_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return self.train.x.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def split_indices(
    n: int, sizes: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` and cut it into disjoint train/aux/test index arrays.

    ``sizes`` are fractions of ``n`` (summing to at most 1) for train, aux and test.
    """
    if any(s <= 0 for s in sizes) or sum(sizes) > 1 + 1e-9:
        raise ValueError(f"split sizes must be > 0 and sum to <= 1, got {list(sizes)}")
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_aux = int(sizes[0] * n), int(sizes[1] * n)
    n_test = min(int(round(sizes[2] * n)), n - n_train - n_aux)
    return (
        order[:n_train],
        order[n_train : n_train + n_aux],
        order[n_train + n_aux : n_train + n_aux + n_test],
    )
