"""Yardsticks for the bench beside the project's own two paths.

- scikit-learn's `MLPClassifier(hidden_layer_sizes=(10,), max_iter=3000)`, the model the
  paper's Adult experiments train (Sec. 5.1) and `subpop_runner.models.mlp.MLP` reproduces,
  fitted one victim at a time on train ∪ its poison set, as a researcher would without us.
- The compute floor of a victim grid: the FLOPs its training needs, counted from the MLP's
  shapes and the epochs each victim trained, over the FLOP/s a float32 matmul of the batched
  path's shape reaches on this CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_info

from subpop_runner.models.mlp import MLP
from subpop_runner.training.base import Fit
from subpop_runner.training.fixed_features import FixedFeatures, HeadVictims
from subpop_runner.types import Part, PoisonSet


def train_victims(
    train: Part,
    poison_sets: Sequence[PoisonSet],
    *,
    model: Callable[..., MLP],
    trainer: Callable[..., L.Trainer],
    seed: int,
    batched: bool = True,
    memory_mb: float = 512,
    description: str = "victims",
) -> HeadVictims:
    """Our path: batched heads on the input (the fixed-features regime without a backbone),
    as the Adult MLP trains in every run."""
    regime = FixedFeatures(head=model)
    return regime.fit(train, poison_sets, Fit(trainer, seed, batched, memory_mb), description)


class Fits(NamedTuple):
    """Victims fitted one at a time: test predictions ``[V, n]``, seconds and epochs ``[V]``."""

    predictions: np.ndarray
    seconds: np.ndarray
    epochs: np.ndarray


def sklearn_victims(
    train: Part, poison_sets: Sequence[PoisonSet], x_test: np.ndarray, *, seed: int
) -> Fits:
    """One `MLPClassifier` per poison set, fitted on ``train ∪ poison`` (the arrays as given:
    float32 stays float32) with ``random_state=seed``."""
    predictions, seconds, epochs = [], [], []
    for poison in poison_sets:
        x = np.concatenate([train.x, poison.x])
        y = np.concatenate([train.y, poison.y])
        model = MLPClassifier(hidden_layer_sizes=(10,), max_iter=3000, random_state=seed)
        start = time.perf_counter()
        model.fit(x, y)
        seconds.append(time.perf_counter() - start)
        predictions.append(model.predict(x_test))
        epochs.append(model.n_iter_)
    return Fits(np.stack(predictions), np.array(seconds), np.array(epochs))


def blas_threads() -> str:
    """The thread pools scikit-learn's fits run on, as threadpoolctl reports them."""
    pools = sorted({f"{pool['internal_api']} {pool['num_threads']}" for pool in threadpool_info()})
    return ", ".join(pools)


class EpochsPerVictim(L.Callback):
    """Counts the epochs each victim of a `train_victims` run trained: a chunk runs until its
    last victim stops, and an epoch computes only the victims not stopped when it starts."""

    def __init__(self) -> None:
        self.counts: list[np.ndarray] = []

    def on_train_start(self, trainer: L.Trainer, module: MLP) -> None:
        self.counts.append(np.zeros(module.n_victims, dtype=np.int64))

    def on_train_epoch_start(self, trainer: L.Trainer, module: MLP) -> None:
        self.counts[-1] += ~module.stopped.cpu().numpy()

    @property
    def epochs(self) -> np.ndarray:
        """Epochs per victim, in the order of the poison sets."""
        return np.concatenate(self.counts)


def with_callback(
    trainer: Callable[..., L.Trainer], callback: L.Callback
) -> Callable[..., L.Trainer]:
    """``trainer`` (as `train_victims` takes it) with ``callback`` added to every fit."""

    def build(*, callbacks: list[L.Callback], **kwargs) -> L.Trainer:
        return trainer(callbacks=[*callbacks, callback], **kwargs)

    return build


def flops_per_row(n_features: int, hidden: int, outputs: int) -> int:
    """FLOPs (2 per multiply-add) of one row's forward and backward pass through a
    ``n_features -> hidden -> outputs`` MLP: forward ``x W1`` and ``h W2``; backward the
    gradients of ``W2``, of the hidden layer and of ``W1`` (none for the input). Biases,
    activations, loss and the optimiser's update are left out, so the floor is a lower bound.
    """
    return 2 * (2 * n_features * hidden + 3 * hidden * outputs)


def matmul_flops(rows: int, n_features: int, columns: int, seconds: float = 2.0) -> float:
    """Achievable FLOP/s of a float32 ``[rows, n_features] @ [n_features, columns]`` product
    with torch on its current threads: the best of repeated timings over ``seconds``."""
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(rows, n_features, generator=generator)
    b = torch.rand(n_features, columns, generator=generator)
    out = torch.empty(rows, columns)
    best, deadline = np.inf, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * rows * n_features * columns / best
