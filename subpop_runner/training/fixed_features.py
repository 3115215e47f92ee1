"""Regime 1, heads on fixed features: the MLP on tabular data and every "last layer" model
(VGG-LL, the EfficientNet-Lite0 head, later BERT's head-only option).

A frozen backbone's features are computed once per (backbone, data) and kept in the stage
cache, keyed by the bytes of the images they come from; a poison point copied from an aux row
reuses that row's features. Then a batched head module (`HeadModule`) holds a chunk of victims
as stacked parameters, and every step feeds each victim a mini-batch of *its own* data
(train ∪ its poison set; see `subpop_runner.data.epochs`). Chunks are sized from the memory
budget; ``batched=False`` trains one victim per module, the reference path. Without a backbone
(tabular data) the head reads the input itself.

Data reach Lightning pre-batched, one `Epoch` per training step: for a 10-unit MLP a
per-sample DataLoader costs ~50x the model's own compute, and even Lightning's per-step
machinery costs ~4x (measured here: 4.6 ms vs 0.75 ms per mini-batch on Adult).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Protocol

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from subpop_runner.data.epochs import PoisonedEpochs
from subpop_runner.errors import ConfigError
from subpop_runner.training.base import Fit, describe_device, span, unknown_layer
from subpop_runner.training.differentiable import Differentiable, PooledFeatures
from subpop_runner.training.frozen import FrozenFeatures
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import FEATURES, PENULTIMATE, Victims, kept_rows
from subpop_runner.types import Part, PoisonSet, Splits

if TYPE_CHECKING:
    from subpop_runner.models.network import Backbone

log = logging.getLogger(__name__)


class HeadModule(Protocol):
    """A LightningModule holding ``n_victims`` heads, trained on `Epoch`s, that flags each
    victim ``stopped`` once it met its stopping rule (its epochs, or sklearn's tol rule)."""

    layers: tuple[str, ...]
    batch_size: int
    n_victims: int
    stopped: Tensor
    penultimate: str | None
    """The layer feeding the last layer, or None when that is the head's input."""

    def predict_proba(self, x: Tensor) -> Tensor: ...

    def last_layer(self) -> tuple[Tensor, Tensor]: ...

    def representation(self, x: Tensor, layer: str) -> Tensor: ...

    def victim(self, v: int) -> nn.Module: ...


POOLED = "pooled"  # a backbone's pooled features: the layer its heads read


class FixedFeatures(Regime):
    """The regime: ``head`` builds a batched head (``n_features``, ``n_classes``,
    ``n_victims``, ``seed``; a `HeadModule` class, or a partial of one); ``backbone`` is the
    frozen feature extractor, or None."""

    fixed_features = True  # its victims offer the shared features (layer `FEATURES`)
    gradients = True  # and `Victims.differentiable`
    warm_start = True  # `fit` can start from trained victims' parameters

    def __init__(
        self,
        *,
        head: Callable[..., HeadModule],
        backbone: Backbone | None = None,
        batch_size: int = 256,
    ) -> None:
        self.head, self.backbone, self.batch_size = head, backbone, batch_size
        self._head_class = head.func if isinstance(head, partial) else head
        self._frozen = None
        if backbone is not None:
            self._frozen = FrozenFeatures(backbone, "pooled_features", batch_size)

    @property
    def layers(self) -> tuple[str, ...]:
        """Layer names `Victims.representation` accepts: the backbone's, then the head's."""
        backbone = self.backbone.layers if self.backbone is not None else ("input",)
        return (*backbone, *(name for name in self._head_class.layers if name not in backbone))

    @property
    def prunable(self) -> bool:
        """Whether the last layer reads learned units (a hidden layer, a backbone's features)
        rather than the raw input."""
        return self.backbone is not None or self._head_class.penultimate is not None

    def check(self, splits: Splits) -> None:
        """ConfigError if the backbone (or, without one, the head) cannot read these data."""
        if self.backbone is None and splits.vocabulary is not None:
            raise ConfigError(
                "this dataset gives token ids, which a head on the input cannot read; use a "
                "text model (model=bert_ll, bert_ft or bert_head)"
            )
        if self.backbone is not None:
            self.backbone.check_inputs(splits)

    def features(self, x: np.ndarray, fit: Fit) -> np.ndarray:
        """The backbone's features of ``x`` ``[n, d]`` (computed once per content, see
        `FrozenFeatures`); without a backbone, the input rows flattened."""
        if self._frozen is None:
            return x.reshape(len(x), -1)
        return self._frozen(x, fit)

    def _poison_features(self, poison: PoisonSet, fit: Fit, like: np.ndarray) -> PoisonSet:
        if self._frozen is not None:
            return self._frozen.of_poison(poison, fit, like)
        x = poison.x.reshape(len(poison), *like.shape[1:]).astype(like.dtype)
        return PoisonSet(poison.subpop_id, x, poison.y, poison.source_index)

    def fit(
        self,
        train: Part,
        poison_sets: Sequence[PoisonSet],
        fit: Fit,
        description: str = "victims",
        keep: Sequence[np.ndarray] | None = None,
        start: HeadVictims | None = None,
    ) -> HeadVictims:
        """One victim per poison set on ``train ∪ poison`` (restricted per victim by ``keep``,
        see `kept_rows`); see the module docstring. With ``start`` (victims of the same sets),
        each victim starts from its ``start`` victim's parameters, with a fresh optimiser and
        stopping rule, in ``start``'s chunks."""
        train_keep, poison_sets = kept_rows(len(train), poison_sets, keep)
        train_features = Part(self.features(train.x, fit), train.y)
        n_features = train_features.x.shape[1]
        sets = [self._poison_features(p, fit, train_features.x) for p in poison_sets]
        n_classes = fit.splits.n_classes if fit.splits is not None else int(train.y.max()) + 1
        probe = self.head(n_features=n_features, n_classes=n_classes, n_victims=1)
        if fit.batched:
            params = sum(p.numel() for p in probe.parameters())
            max_poison = max((len(p) for p in sets), default=0)
            size = victims_per_chunk(
                params, len(train), max_poison, probe.batch_size, fit.memory_mb
            )
        else:
            size = 1
        if start is None:
            bounds = [*range(0, len(sets), size), len(sets)]
        else:
            bounds = np.cumsum([0] + [m.n_victims for m in start.chunks]).tolist()
        chunks, epochs, device = [], [], "cpu"
        with tqdm(
            total=len(sets), desc=description, unit="victim", leave=False, mininterval=1.0
        ) as bar:
            for i, (first, end) in enumerate(itertools.pairwise(bounds)):
                part = sets[first:end]
                seed = fit.seed + first
                module = self.head(
                    n_features=n_features, n_classes=n_classes, n_victims=len(part), seed=seed
                )
                if start is not None:
                    module.load_state_dict(dict(start.chunks[i].named_parameters()), strict=False)
                chunk_keep = None if train_keep is None else train_keep[first:end]
                data = PoisonedEpochs(
                    train_features, part, probe.batch_size, seed=seed, keep=chunk_keep
                )
                trainer = fit.trainer(
                    **fit.quiet, enable_progress_bar=False, callbacks=[VictimProgress(bar)]
                )
                trainer.fit(module, DataLoader(data, batch_size=None))
                device = describe_device(trainer.strategy.root_device)
                chunks.append(module.eval().cpu())
                epochs.append(trainer.current_epoch)
        log.info(
            "trained %d %s in %d chunk(s), %s epochs",
            len(sets),
            description,
            len(chunks),
            span(epochs),
        )
        return HeadVictims(chunks, epochs, device, self, fit)


class VictimProgress(L.Callback):
    """Advances a progress bar over victims as each one meets its stopping rule."""

    def __init__(self, bar: tqdm) -> None:
        self.bar, self.done = bar, 0

    def on_train_epoch_end(self, trainer: L.Trainer, module: HeadModule) -> None:
        stopped = int(module.stopped.sum())
        self.bar.update(stopped - self.done)
        self.done = stopped
        self.bar.set_postfix(epoch=trainer.current_epoch + 1, refresh=False)

    def on_train_end(self, trainer: L.Trainer, module: HeadModule) -> None:
        self.bar.update(module.n_victims - self.done)


@dataclass
class HeadVictims(Victims):
    """Victims of this regime: the heads in chunks, over the regime's (cached) features."""

    chunks: list[HeadModule]
    epochs: list[int]
    device: str
    regime: FixedFeatures = field(repr=False)
    fit: Fit = field(repr=False)

    def __len__(self) -> int:
        return sum(m.n_victims for m in self.chunks)

    def last_layer(self) -> list[tuple[np.ndarray, np.ndarray]]:
        pairs = [m.last_layer() for m in self.chunks]
        weights = torch.cat([w for w, _ in pairs]).numpy()
        bias = torch.cat([b for _, b in pairs]).numpy()
        return list(zip(weights, bias, strict=True))

    def differentiable(self, v: int) -> Differentiable:
        """The frozen backbone (or the input, flattened) as ``features``, victim v's head as
        ``head``: all
        of the head's parameters are trained, and only they are."""
        start = 0
        for chunk in self.chunks:
            if v < start + chunk.n_victims:
                backbone = self.regime.backbone
                front = nn.Flatten() if backbone is None else PooledFeatures(backbone)
                return Differentiable(front, chunk.victim(v - start))
            start += chunk.n_victims
        raise IndexError(f"victim {v} of {len(self)}")

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        features = torch.from_numpy(self.regime.features(x, self.fit))
        return np.concatenate([m.predict_proba(features).numpy() for m in self.chunks])

    def representation(self, x: np.ndarray, layer: str) -> np.ndarray:
        """Backbone layers are the same for every victim (it is frozen); head layers are
        each victim's own. ``penultimate`` is the head's (the MLP's hidden layer), or the
        features a single-layer head reads."""
        n_victims = len(self)
        backbone = self.regime.backbone
        if layer == PENULTIMATE:
            layer = self.chunks[0].penultimate or (POOLED if backbone is not None else "input")
        if layer == FEATURES:
            shared = self.regime.features(x, self.fit)
        elif layer == "input":
            shared = x.reshape(len(x), -1)
        elif backbone is not None and layer == POOLED:
            shared = self.regime.features(x, self.fit)  # the cached features themselves
        elif backbone is not None and layer in backbone.layers:
            shared = _layer(backbone, x, layer)
        elif layer in self.regime.layers:
            features = torch.from_numpy(self.regime.features(x, self.fit))
            with torch.no_grad():
                return np.concatenate(
                    [m.representation(features, layer).numpy() for m in self.chunks]
                )
        else:
            raise unknown_layer(layer, self.regime.layers)
        return np.broadcast_to(shared, (n_victims, *shared.shape))


def _layer(network: nn.Module, x: np.ndarray, layer: str, batch_size: int = 256) -> np.ndarray:
    """A frozen network's activations at ``layer``, on the device it sits on (where feature
    extraction left it)."""
    network.eval()
    device = next(network.parameters(), torch.empty(0)).device
    with torch.no_grad():
        parts = [
            network.representation(torch.from_numpy(x[i : i + batch_size]).to(device), layer)
            for i in range(0, len(x), batch_size)
        ]
    return torch.cat(parts).float().cpu().numpy()


def victims_per_chunk(
    params_per_victim: int, n_train: int, max_poison: int, batch_size: int, memory_mb: float
) -> int:
    """How many victims fit in ``memory_mb`` (float32), estimated per victim: parameters,
    gradients, Adam's two moments and the active-victim copies of parameters and gradients
    (6 copies); its padded poison rows in a step (mean + 5 sd of how many land there) as
    input; activations and their gradients for those rows and the shared train block (4 copies
    of 32 floats a row). The shared train set itself does not grow with the chunk."""
    mean_rows = max_poison * batch_size / max(1, n_train)
    step_rows = int(mean_rows + 5 * mean_rows**0.5) + 1
    per_victim = 6 * params_per_victim + step_rows * params_per_victim // 10
    per_victim += 4 * (batch_size + step_rows) * 32
    return max(1, int(memory_mb * 2**20 // (4 * per_victim)))
