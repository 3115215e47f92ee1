"""FeatureMatch (paper Alg. 1): subpopulations are exact matches on annotation values.

The UCI Adult protocol (Sec. 5.2) matches on education, race and sex and keeps only groups
with 10 to 100 aux points ("due to large variance in FeatureMatch subpopulation sizes").
"""

from __future__ import annotations

from collections.abc import Sequence

from subpop_runner.errors import ConfigError
from subpop_runner.selectors.base import Features, Memo, Selector, member_mask, no_memo
from subpop_runner.types import Splits, Subpopulation


class FeatureMatch(Selector):
    def __init__(
        self,
        *,
        columns: Sequence[str] = ("education", "race", "sex"),
        min_size: int = 10,
        max_size: int = 100,
        take: Sequence[str] = ("all",),
        n: int | None = None,
    ) -> None:
        super().__init__(take=take, n=n)
        self.columns, self.min_size, self.max_size = list(columns), min_size, max_size

    def check(self, splits: Splits, layers: Sequence[str] = ()) -> None:
        annotations = splits.aux.annotations
        available = [] if annotations is None else list(annotations.columns)
        missing = [c for c in self.columns if c not in available]
        if missing:
            raise ConfigError(
                f"FeatureMatch columns {missing} are not annotations of this dataset; "
                f"choose selector.columns from {available}"
            )

    def candidates(
        self, splits: Splits, features: Features | None = None, memo: Memo = no_memo
    ) -> list[Subpopulation]:
        sizes = splits.aux.annotations.groupby(self.columns, observed=True).size()
        kept = sizes[(sizes >= self.min_size) & (sizes <= self.max_size)]
        found = []
        for index, key in enumerate(kept.index):
            values = dict(
                zip(self.columns, key if isinstance(key, tuple) else (key,), strict=True)
            )
            found.append(
                Subpopulation(
                    id=index,
                    description=", ".join(f"{c}={v}" for c, v in values.items()),
                    aux=member_mask(splits.aux, values),
                    train=member_mask(splits.train, values),
                    test=member_mask(splits.test, values),
                )
            )
        return found
