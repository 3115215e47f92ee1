"""The data every layer shares: the three parts of an experiment (`Part`, `Splits`), a
subpopulation and a selector's choice among them (`Subpopulation`, `Selection`), and an
attack's poison points (`PoisonSet`). Below every other module: it imports numpy and pandas
only, so data, models, training, selectors, attacks and defenses all read these types without
importing one another."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

# The parts of every experiment, by their `Splits` attribute names.
PARTS = ("aux", "train", "test")


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

    def and_rows(self, x: np.ndarray, y: np.ndarray) -> PoisonSet:
        """These points and ``(x, y)`` besides (rows a defense relabeled: from no aux row,
        source -1)."""
        return PoisonSet(
            self.subpop_id,
            np.concatenate([self.x, x.astype(self.x.dtype)]),
            np.concatenate([self.y, y]),
            np.concatenate([self.source_index, np.full(len(y), -1)]),
        )

    @classmethod
    def empty(cls, input_shape: tuple[int, ...]) -> PoisonSet:
        """No poison: the clean victim's training set is the train split alone."""
        return cls(
            subpop_id=-1,
            x=np.zeros((0, *input_shape), np.float32),
            y=np.zeros(0, np.int64),
            source_index=np.zeros(0, np.int64),
        )


@dataclass(frozen=True)
class Subpopulation:
    """A filter function's footprint: which aux / train / test points it selects."""

    id: int
    description: str
    aux: np.ndarray
    train: np.ndarray
    test: np.ndarray
    clean_confidence: float = float("nan")

    @property
    def sizes(self) -> dict[str, int]:
        return {
            "aux": int(self.aux.sum()),
            "train": int(self.train.sum()),
            "test": int(self.test.sum()),
        }


@dataclass(frozen=True)
class Selection:
    """Every candidate subpopulation, with why it was or was not attacked."""

    candidates: list[Subpopulation]
    status: dict[int, str] = field(default_factory=dict)

    @property
    def attacked(self) -> list[Subpopulation]:
        return [s for s in self.candidates if self.status[s.id] == "attacked"]

    def count(self, status: str) -> int:
        return sum(1 for value in self.status.values() if value == status)

    def on_test_rows(self, rows: np.ndarray) -> Selection:
        """The same subpopulations with their test membership restricted to ``rows`` (a
        defense's holdout taken out of the test part)."""
        restricted = [replace(s, test=s.test[rows]) for s in self.candidates]
        return Selection(restricted, self.status)
