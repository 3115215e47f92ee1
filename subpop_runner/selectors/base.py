"""What every selector returns, and the ranking shared by all of them.

Ranking follows the authors' protocol: subpopulations without test points are skipped (and
counted), the rest are ordered by a clean model's mean confidence in the true class on the
subpopulation's aux points, lowest first (lower confidence = closer to the decision boundary,
CCS version Sec. 5.4), and then all of them, or the N lowest / middle / highest, are attacked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from subpop_runner.memo import Memo, no_memo
from subpop_runner.types import PARTS, Part, Selection, Splits, Subpopulation

Features = dict[str, np.ndarray]


class Selector(ABC):
    """Builds candidate subpopulations from the aux set only, then ranks them."""

    uses_surrogate = False

    def __init__(self, *, take: Sequence[str] = ("all",), n: int | None = None) -> None:
        self.take, self.n = tuple(take), n

    def check(self, splits: Splits, layers: Sequence[str]) -> None:  # noqa: B027
        """Raise `ConfigError` if the settings cannot work on these splits and a model with
        these layers (before training); most selectors need no check."""

    def features(
        self, splits: Splits, surrogate: Callable[[str], Features], memo: Memo = no_memo
    ) -> Features:
        """The representation of each part to select on: the input itself unless the selector
        asks for a surrogate's layer (``surrogate(layer)``, trained on aux) or another one."""
        return {
            part: getattr(splits, part).x.reshape(len(getattr(splits, part)), -1) for part in PARTS
        }

    @abstractmethod
    def candidates(
        self, splits: Splits, features: Features, memo: Memo = no_memo
    ) -> list[Subpopulation]:
        """All subpopulations the filter family defines on these splits.

        ``features`` maps each part (aux/train/test) to the representation to select on (the
        input or a surrogate's layer); ``memo(stage, key_parts, compute)`` caches a stage.
        """

    def select(
        self,
        splits: Splits,
        clean_proba_aux: np.ndarray,
        features: Features,
        memo: Memo = no_memo,
    ) -> Selection:
        found = [
            replace(s, clean_confidence=mean_confidence(clean_proba_aux, splits.aux.y, s.aux))
            for s in self.candidates(splits, features, memo)
        ]
        status = {s.id: "no test points" for s in found if not s.test.any()}
        ranked = sorted((s for s in found if s.test.any()), key=lambda s: s.clean_confidence)
        chosen = {s.id for s in take_ranked(ranked, self.take, self.n)}
        status |= {s.id: "attacked" if s.id in chosen else "not selected" for s in ranked}
        return Selection(ranked + [s for s in found if not s.test.any()], status)


def mean_confidence(proba: np.ndarray, labels: np.ndarray, members: np.ndarray) -> float:
    """Mean probability a model gives the true class, over the member points."""
    if not members.any():
        return float("nan")
    return float(proba[members, labels[members]].mean())


def take_ranked(ranked: list, take: Sequence[str], n: int | None) -> list:
    """The ``all`` of ``ranked`` or the union of its ``n`` lowest / middle / highest items."""
    if "all" in take:
        return list(ranked)
    size = len(ranked)
    middle = max(0, (size - n) // 2)
    windows = {
        "lowest": range(0, n),
        "middle": range(middle, middle + n),
        "highest": range(size - n, size),
    }
    picked = {i for option in take for i in windows[option] if 0 <= i < size}
    return [ranked[i] for i in sorted(picked)]


def describe(annotations: object, members: np.ndarray, top: int = 3) -> str:
    """A short human description of a subpopulation from its points' annotations."""
    if annotations is None or not members.any():
        return ""
    shares = [
        (share, f"{column}={value} ({share:.0%})")
        for column in annotations.columns
        for value, share in annotations.loc[members, column]
        .value_counts(normalize=True)
        .head(1)
        .items()
    ]
    return ", ".join(text for _, text in sorted(shares, reverse=True)[:top])


def member_mask(part: Part, values: dict[str, str]) -> np.ndarray:
    """Points of ``part`` whose annotations equal ``values`` on every column."""
    mask = np.ones(len(part), dtype=bool)
    for column, value in values.items():
        mask &= (part.annotations[column] == value).to_numpy()
    return mask
