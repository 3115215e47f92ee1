"""How an experiment's rows are cut into its three disjoint parts (paper Sec. 5: D, D_aux, D_test;
the parts themselves are `subpop_runner.types.Splits`)."""

from __future__ import annotations

import math

import numpy as np


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
