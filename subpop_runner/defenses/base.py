"""What a defense sees and returns (paper Sec. 7; docs/architecture.md, "Defenses").

A defense sees each victim's training rows as `TrainingRows`: their labels, the victims'
outputs on them (per-row loss, probabilities, the ``penultimate`` representation) and a way to
train victims on the rows it keeps. It never sees which rows are poison: a victim's shared
train rows and its own poison rows come as one list, in an order set by each row's content (a
seeded hash of its input and label), so the same rows, however they were split into train and
poison, come in the same order; `TrainingRows` holds no lengths, offsets or indices that tell
the two apart. Where they sit is the pipeline's to know (`RowOrder`, which builds the view and
maps its masks back). The one number a defense is told is ``removal_budget``, the true poison
count, for TRIM's best case (paper Sec. 7.1), and the run logs that it was used.

It returns a keep mask and a score per row, per victim, and the victims trained on what it
kept; the pipeline compares the masks with the provenance afterwards
(`subpop_runner.metrics.with_defense`).
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from subpop_runner.errors import ConfigError
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import PROBA, Victims, cross_entropy


class TrainingRows:
    """Each victim's training rows as a defense sees them.

    ``labels[v]``: victim v's labels, in its rows' content order; every mask and score a
    defense returns is in that order. ``removal_budget[v]``: how many rows victim v's defense
    may assume are poison when a defense is told the true count (TRIM's best case for the
    defender): a number, never which rows. ``holdout``: clean rows ``(x, y)`` the defender owns
    (fine-pruning's), taken out of the test part; None when it has none.
    """

    def __init__(
        self,
        labels: list[np.ndarray],
        n_classes: int,
        removal_budget: Sequence[int],
        outputs: Callable[[Victims, str], Iterator[np.ndarray]],
        retrain: Callable[..., Victims],
        holdout: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.labels, self.n_classes = labels, n_classes
        self.removal_budget, self.holdout = list(removal_budget), holdout
        self._outputs, self._retrain = outputs, retrain

    def __len__(self) -> int:
        return len(self.labels)

    def outputs(self, victims: Victims, what: str) -> Iterator[np.ndarray]:
        """Victim v's `PROBA` or ``penultimate`` on its own rows, in their order, for each v."""
        return self._outputs(victims, what)

    def losses(self, victims: Victims) -> Iterator[np.ndarray]:
        """Each victim's per-row cross-entropy on its own rows."""
        for proba, labels in zip(self.outputs(victims, PROBA), self.labels, strict=True):
            yield cross_entropy(proba, labels)

    def train(
        self,
        keep: Sequence[np.ndarray],
        start: Victims | None = None,
        labels: Sequence[np.ndarray] | None = None,
    ) -> Victims:
        """Victims trained (same seed) on the rows each mask keeps: from scratch, or from
        ``start``'s parameters (a warm start, where the model's regime offers one).
        ``labels``: each victim's labels as a label-sanitising defense leaves them (in this
        order); a row whose label changed trains under its new label (its keep entry, false:
        the row as it was is gone)."""
        return self._retrain(keep, start, labels)


class RowOrder:
    """The pipeline's side of `TrainingRows`: each victim's rows are its ``shared`` rows then
    its ``own`` ones (training order), and a defense sees them sorted by a seeded hash of each
    row's input and label. Identical rows (a label-flip draw and its copy) tie; they are
    ordered at random, so a tie-break cannot favour either kind."""

    def __init__(
        self,
        shared: tuple[np.ndarray, np.ndarray],
        own: Sequence[tuple[np.ndarray, np.ndarray]],
        seed: int,
    ) -> None:
        (self._shared_x, shared_y), self._own_x = shared, [x for x, _ in own]
        shared_keys = content_keys(self._shared_x, shared_y, seed)
        rng = np.random.default_rng([seed, 7])
        self._orders, self._labels = [], []
        for x, y in own:
            keys = np.concatenate([shared_keys, content_keys(x, y, seed, like=self._shared_x)])
            order = np.lexsort((rng.random(len(keys)), keys))
            self._orders.append(order)
            self._labels.append(np.concatenate([shared_y, y])[order])

    def view(
        self,
        n_classes: int,
        removal_budget: Sequence[int],
        train: Callable[..., Victims],
        holdout: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> TrainingRows:
        """What a defense receives. ``train(keep=masks in training order, start=…,
        relabeled=…)`` trains victims on kept rows; ``relabeled[v]``: rows ``(x, y)`` victim v
        trains on besides them (those a defense relabeled, under their new labels; their
        originals are left out)."""

        def outputs(victims: Victims, what: str) -> Iterator[np.ndarray]:
            rows = victims.on_rows(self._shared_x, self._own_x, what)
            for output, order in zip(rows, self._orders, strict=True):
                yield output[order]

        def retrain(
            keep: Sequence[np.ndarray],
            start: Victims | None,
            labels: Sequence[np.ndarray] | None,
        ) -> Victims:
            warm = {} if start is None else {"start": start}
            if labels is None:
                return train(keep=self.in_training_order(keep), **warm)
            changed = [new != old for new, old in zip(labels, self._labels, strict=True)]
            relabeled = [
                self.rows(v, c, new)
                for v, (c, new) in enumerate(zip(changed, labels, strict=True))
            ]
            kept = [k & ~c for k, c in zip(keep, changed, strict=True)]
            return train(keep=self.in_training_order(kept), relabeled=relabeled, **warm)

        return TrainingRows(
            [labels.copy() for labels in self._labels],
            n_classes,
            removal_budget,
            outputs,
            retrain,
            holdout,
        )

    def rows(self, v: int, mask: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Victim v's rows that ``mask`` marks (in a defense's order), with ``labels``."""
        where = self._orders[v][mask]
        shared = where < len(self._shared_x)
        x = np.empty((len(where), *self._shared_x.shape[1:]), self._shared_x.dtype)
        x[shared] = self._shared_x[where[shared]]
        x[~shared] = self._own_x[v][where[~shared] - len(self._shared_x)]
        return x, labels[mask]

    def in_training_order(self, masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Masks (or scores) from a defense's order back to the training order (shared rows,
        then own): for training, and for the pipeline's provenance report."""
        out = []
        for mask, order in zip(masks, self._orders, strict=True):
            back = np.empty_like(mask)
            back[order] = mask
            out.append(back)
        return out


def content_keys(
    x: np.ndarray, y: np.ndarray, seed: int, like: np.ndarray | None = None
) -> np.ndarray:
    """A seeded 64-bit hash of each row's input (as ``like``'s dtype, so a poison row and a
    train row with the same values hash alike) and label."""
    x = np.ascontiguousarray(x, dtype=(x if like is None else like).dtype)
    x = x.reshape(len(x), int(np.prod(x.shape[1:])))  # not -1: a poison set may be empty
    salt = np.int64(seed).tobytes()
    labels = np.asarray(y, np.int64)
    return np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(row.tobytes() + label.tobytes(), digest_size=8, key=salt).digest(),
                "little",
            )
            for row, label in zip(x, labels, strict=True)
        ),
        dtype=np.uint64,
        count=len(x),
    )


@dataclass
class Defended:
    """A defense's result, per victim in `TrainingRows` order: the rows kept as they were (not
    a row removed, nor one relabeled), each row's
    score (higher: more suspect), the rounds trained and the victims trained on what was kept;
    ``details`` holds what a defense reports besides (per-class cluster sizes, ...), and
    ``stages`` intermediate victims also measured (fine-pruning's pruned ones)."""

    keep: list[np.ndarray]
    score: list[np.ndarray]
    rounds: list[int]
    victims: Victims
    details: list[dict] = field(default_factory=list)
    stages: dict[str, Victims] = field(default_factory=dict)
    seconds: float = 0.0
    changed: bool = True  # False: ``victims`` are the undefended ones (``defense=none``)

    @property
    def measured(self) -> dict[str, Victims]:
        """The victims measured beside the undefended ones, by the name their columns take
        (``defended``, and ``pruned`` or ``certified``); none where nothing changed."""
        return {"defended": self.victims, **self.stages} if self.changed else {}


class Defense(ABC):
    """A defense (what ``conf/defense/<name>.yaml``'s ``_target_`` builds): `defend` is its
    algorithm; `__call__` times it and refuses a result that leaves a victim no row of a class.

    Abilities (declared here with their defaults; a defense states the ones it has):

    - ``removes_rows``: it sanitises the training set (its keep masks drop rows: TRIM, SEVER,
      activation clustering, spectral signatures) rather than repairing or replacing the
      model on every row (fine-pruning, the certified ridge, none);
    - ``warm_start``: a defense that retrains in rounds (TRIM, SEVER) starts each round's
      retrain from the victims it replaces rather than from a fresh initialisation; the
      defended victims, its final fit, always train from scratch on what it keeps
      (docs/architecture.md, "Defenses");
    - `check`: refuses, before any run, a model that cannot offer what it uses;
    - `holdout`: the test rows the defender owns (fine-pruning's clean holdout), out of every
      metric of the run; none by default;
    - `logged_params`: what the run logs about the defense besides its config (TRIM: whether
      it was told the true poison count).
    """

    removes_rows: bool = False
    warm_start: bool = False

    def holdout(self, n_test: int, seed: int) -> np.ndarray:
        """Indices of the test rows the defender owns; none here."""
        return np.zeros(0, np.int64)

    def logged_params(self) -> dict[str, str]:
        """Run parameters this defense adds to its config's; none here."""
        return {}

    def check(self, n_train: int, regime: Regime) -> None:
        """ConfigError when this defense cannot run on this model or training set."""
        if self.warm_start and not regime.warm_start:
            raise ConfigError(
                "defense.warm_start: this model's victims retrain from scratch only (a warm "
                "start needs a head on fixed features: mlp, vgg_ll, efficientnet_ll, "
                "bert_head); set defense.warm_start=false"
            )

    def retrain(
        self,
        rows: TrainingRows,
        keep: Sequence[np.ndarray],
        victims: Victims,
        final: bool = True,
    ) -> Victims:
        """Victims trained on the rows ``keep`` marks: from scratch for the ``final`` fit,
        else warm from ``victims`` where ``warm_start`` is set."""
        warm = self.warm_start and not final
        return rows.train(keep, start=victims if warm else None)

    @abstractmethod
    def defend(self, rows: TrainingRows, victims: Victims) -> Defended:
        """``victims`` were trained on every row (the undefended victims)."""

    def __call__(self, rows: TrainingRows, victims: Victims) -> Defended:
        started = time.perf_counter()
        defended = self.defend(rows, victims)
        defended.seconds = time.perf_counter() - started
        for keep, labels in zip(defended.keep, rows.labels, strict=True):
            present, kept = set(labels.tolist()), set(labels[keep].tolist())
            emptied = sorted(set(range(rows.n_classes)) & present - kept)
            if emptied:
                raise DefenseError(
                    f"defense: it removed every training row of class(es) {emptied} from a "
                    "victim, which then cannot learn them; loosen its threshold"
                )
        return defended


class DefenseError(ConfigError):
    """A defense whose settings leave a victim nothing to learn from."""


def keep_lowest(scores: np.ndarray, remove: int) -> np.ndarray:
    """A mask keeping all but the ``remove`` highest scores (ties: the later row goes)."""
    keep = np.ones(len(scores), bool)
    if remove > 0:
        keep[np.argsort(scores, kind="stable")[len(scores) - remove :]] = False
    return keep


def per_class(labels: np.ndarray, keep: np.ndarray, n_classes: int) -> Iterator[np.ndarray]:
    """For each class with kept rows, the indices of its kept rows."""
    for c in range(n_classes):
        rows = np.flatnonzero(keep & (labels == c))
        if len(rows):
            yield rows
