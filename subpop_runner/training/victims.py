"""What every trained victim offers, whatever its family: the interface defenses and
optimisation attacks use, and nothing more (docs/architecture.md, "The victim interface").

- ``predict_proba(x)``: class probabilities ``[V, n, C]``;
- ``representation(x, layer)``: activations at a named layer ``[V, n, d]``; every family
  understands ``"penultimate"``, the input of its last layer (a head on fixed features: the
  features it reads);
- ``loss(x, y)``: each row's cross-entropy ``[V, n]``, from the probabilities;
- ``last_layer()``: each victim's last-layer weights ``W [outputs, d]`` and bias ``[outputs]``
  (a two-class MLP has one logistic output, as scikit-learn's);
- ``on_rows(shared, own, what)``: any of the above on each victim's own training rows: the
  rows every victim shares plus the victim's own (its poison set), one victim at a time;
- ``differentiable(v)``: victim v as a torch function of its inputs, for gradient attacks
  (`subpop_runner.training.differentiable`); only where the regime says ``gradients = True``.

The module imports numpy only: a family outside the Lightning regimes (scikit-learn's MLP)
subclasses it without importing Lightning.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from subpop_runner.training.differentiable import Differentiable
    from subpop_runner.types import PoisonSet

PENULTIMATE = "penultimate"
PROBA = "proba"
# The fixed features a head on fixed features reads (its input, or a frozen backbone's
# output), the same for every victim; only that regime offers them.
FEATURES = "features"


class Victims(ABC):
    """Trained victims, in the order of the poison sets they were trained on; ``device`` is
    where they trained."""

    device: str

    @abstractmethod
    def __len__(self) -> int:
        """How many victims."""

    @abstractmethod
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n_victims, n, classes]``."""

    @abstractmethod
    def representation(self, x: np.ndarray, layer: str) -> np.ndarray:
        """Activations at a named layer (or ``"penultimate"``), flattened:
        ``[n_victims, n, d]``."""

    @abstractmethod
    def last_layer(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per victim, the last layer's weights ``[outputs, d]`` and bias ``[outputs]``: the
        logits are ``penultimate @ W.T + b``."""

    def differentiable(self, v: int) -> Differentiable:
        """Victim ``v`` as a torch function of its inputs. A family whose regime does not
        declare ``gradients = True`` cannot: attacks that need it refuse it at validation."""
        raise NotImplementedError(f"{type(self).__name__} offers no gradients")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels ``[n_victims, n]``."""
        return self.predict_proba(x).argmax(-1)

    def loss(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each row's cross-entropy under each victim ``[n_victims, n]``."""
        return cross_entropy(self.predict_proba(x), y)

    def on_rows(
        self, shared: np.ndarray, own: Sequence[np.ndarray], what: str
    ) -> Iterator[np.ndarray]:
        """Victim v's ``what`` (`PROBA` or a layer name) on ``shared`` followed by
        ``own[v]``, for each victim in turn. This default computes every victim on every
        victim's rows at once; a family whose outputs are large computes one victim at a
        time instead."""
        output = self.predict_proba if what == PROBA else lambda x: self.representation(x, what)
        on_shared = output(shared)
        on_own = output(np.concatenate(own)) if sum(len(o) for o in own) else None
        start = 0
        for v, rows in enumerate(own):
            if len(rows):
                yield np.concatenate([on_shared[v], on_own[v, start : start + len(rows)]])
            else:
                yield np.asarray(on_shared[v])
            start += len(rows)


def proba_from_logits(logits: np.ndarray) -> np.ndarray:
    """Class probabilities ``[..., C]`` from last-layer outputs: softmax, or for a single
    logistic output (two classes) ``[1 − σ(z), σ(z)]``."""
    logits = np.asarray(logits, np.float64)
    if logits.shape[-1] == 1:
        positive = 1 / (1 + np.exp(-logits))
        return np.concatenate([1 - positive, positive], -1)
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def cross_entropy(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``-log p[y]`` per row of probabilities ``[..., n, C]``, labels ``[n]``."""
    picked = np.take_along_axis(proba, np.broadcast_to(y[:, None], (*proba.shape[:-1], 1)), -1)
    return -np.log(np.clip(picked[..., 0].astype(np.float64), 1e-12, None))


def kept_rows(
    n_train: int, poison_sets: Sequence[PoisonSet], keep: Sequence[np.ndarray] | None
) -> tuple[np.ndarray | None, list[PoisonSet]]:
    """Split per-victim keep masks (victim v's over its ``n_train`` shared rows then its poison
    rows) into a train mask ``[V, n_train]`` and the kept poison sets. Without masks (no
    defense), None and the sets as given: the regimes then train exactly as before masks."""
    if keep is None:
        return None, list(poison_sets)
    if len(keep) != len(poison_sets):
        raise ValueError(f"{len(keep)} keep masks for {len(poison_sets)} victims")
    for mask, poison in zip(keep, poison_sets, strict=True):
        if mask.shape != (n_train + len(poison),):
            raise ValueError(f"a keep mask of {mask.shape} for {n_train} + {len(poison)} rows")
    train_keep = np.stack([mask[:n_train] for mask in keep]).astype(bool)
    kept = [p.kept(mask[n_train:]) for mask, p in zip(keep, poison_sets, strict=True)]
    return train_keep, kept
