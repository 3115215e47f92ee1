"""The yardsticks a report measures with, so that no comparison can be over-read:

- `interval`: the mean over seeds and the 95% Student-t confidence interval of that mean;
- `prediction_interval`: where ONE more run would fall, 95%: mean ± t · s · √(1 + 1/n). A
  single number from elsewhere (the paper's tables are single runs) is judged against this,
  not against the interval of our mean, which shrinks with n while one run's spread does not;
- `paired_differences`: a claimed difference (α, layer, defense, attack) as the difference per
  seed between two settings that share that seed's split, clusters and poison draws; its
  interval removes the seed-to-seed spread the two settings have in common.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from scipy import stats


def interval(values: pd.Series) -> tuple[float, float, int]:
    """Mean, 95% Student-t half-width (NaN below two values) and n, ignoring missing values."""
    values = values.astype(float).dropna()
    n = len(values)
    if n < 2:
        return (values.mean() if n else math.nan), math.nan, n
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return values.mean(), half, n


def prediction_interval(values: pd.Series) -> tuple[float, float, int]:
    """The 95% interval for one new run, ``(low, high, n)``; NaN bounds below two values."""
    values = values.astype(float).dropna()
    n = len(values)
    if n < 2:
        return math.nan, math.nan, n
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) * math.sqrt(1 + 1 / n)
    return values.mean() - half, values.mean() + half, n


def paired_differences(
    runs: pd.DataFrame,
    axis: pd.Series,
    baseline: object,
    other: object,
    metric: str,
    pair_on: Sequence[str],
) -> pd.Series:
    """``metric`` at ``axis == other`` minus at ``axis == baseline``, one difference per value
    of the ``pair_on`` columns (the seed) present at both; several runs of one pair are
    averaged first."""
    on = list(pair_on)
    base = runs[axis == baseline].groupby(on, dropna=False)[metric].mean()
    then = runs[axis == other].groupby(on, dropna=False)[metric].mean()
    return (then - base).dropna()
