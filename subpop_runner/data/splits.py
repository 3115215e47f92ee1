"""The three disjoint parts of every experiment (paper Sec. 5: D, D_aux, D_test)."""

from __future__ import annotations

import math
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
    # Token-id inputs (text): the `subpop_runner.data.tokens.vocabulary_digest` of the tokenizer
    # that made them, so a model can check they index its own embeddings. None for other data.
    vocabulary: str | None = None
    # Tables: the column groups that one-hot encode one category each (an optimised poison
    # keeps each group one-hot); every other column is continuous. Empty for other data.
    one_hot: tuple[tuple[int, ...], ...] = ()

    @property
    def n_features(self) -> int:
        """Input size of one row, flattened (an image's pixels)."""
        return int(np.prod(self.input_shape))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one row: ``(d,)`` for tables, ``(C, H, W)`` for images."""
        return tuple(self.train.x.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def split_indices(
    n: int, sizes: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` and cut it into disjoint train/aux/test index arrays.

    ``sizes`` are fractions of ``n`` (summing to at most 1) for train, aux and test; each part
    gets ``floor(size * n)`` rows. When the fractions sum to 1 the rows that flooring leaves
    over go one each to the parts with the largest remainders (the earlier part on a tie), so
    every row is used: equal thirds of 48,842 are 16,281 / 16,281 / 16,280.
    """
    if any(s <= 0 for s in sizes) or sum(sizes) > 1 + 1e-9:
        raise ValueError(f"split sizes must be > 0 and sum to <= 1, got {list(sizes)}")
    exact = np.asarray(sizes, dtype=np.float64) * n
    # The 1e-6 absorbs float error: 0.29 * 100 is 28.999999999999996, and 29 rows are meant.
    counts = np.floor(exact + 1e-6).astype(np.int64)
    if math.isclose(sum(sizes), 1.0, rel_tol=0.0, abs_tol=1e-9):
        # A stable sort keeps ties in part order.
        by_remainder = np.argsort(-(exact - counts), kind="stable")
        counts[by_remainder[: n - counts.sum()]] += 1
    order = np.random.default_rng(seed).permutation(n)
    ends = np.cumsum(counts)
    return order[: ends[0]], order[ends[0] : ends[1]], order[ends[1] : ends[2]]


def sized_split(n: int, rows: int, seed: int) -> list[np.ndarray]:
    """Shuffle ``range(n)`` with the seed and cut it into ``rows`` for D, ``rows`` for D_aux and
    the rest for D_test (the authors' UTKFace rule, and the offline IMDB split)."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[:rows], order[rows : 2 * rows], order[2 * rows :]]
