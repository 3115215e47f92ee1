"""Step 5: train victims on the clean train set plus each one's own poison set.

`train_victims` trains many victims at once: one `MLP` module holds a chunk of victims as
stacked parameters, and every step feeds each victim a mini-batch of *its own* data
(train ∪ its poison set; see `Epoch` for how batches are drawn). Chunks are sized from a
memory budget. ``batched=False`` trains one victim per module, the reference path.

Data reaches Lightning pre-batched, one `Epoch` per training step: for a 10-unit MLP a
per-sample DataLoader costs ~50x the model's own compute, and even Lightning's per-step
machinery costs ~4x (measured here: 4.6 ms vs 0.75 ms per mini-batch on Adult).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from subpop_runner.attacks.base import PoisonSet
from subpop_runner.data.splits import Part

if TYPE_CHECKING:
    from subpop_runner.models.mlp import MLP

log = logging.getLogger(__name__)

# Lightning's own pytree helper trips a torch deprecation warning on every fit.
warnings.filterwarnings("ignore", message=".*treespec.*", category=Warning)
for _noisy in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


class Step(NamedTuple):
    """One mini-batch: a block of train rows shared by all victims, plus each victim's own
    poison rows for this step, padded to ``[V, r, d]`` (``poison_weight`` 0 marks padding)."""

    x: Tensor
    y: Tensor
    poison_x: Tensor
    poison_y: Tensor
    poison_weight: Tensor


@dataclass
class Epoch:
    """One epoch's data for V victims; the MLP runs its mini-batch updates over `steps()`.

    Victim v's epoch is the train set plus its own poison set, each point seen once: train
    rows are shuffled and cut into blocks of ``batch_size`` (shared by all victims), and each
    poison point lands in a uniformly random block. So a victim's batch is a block plus the
    few poison points drawn into it, and a victim trained alone (V=1) gets the same procedure.
    Poison rows are sorted by (step, victim); ``poison_slot`` is a row's rank among its
    victim's rows in that step.
    """

    x: Tensor
    y: Tensor
    poison_x: Tensor
    poison_y: Tensor
    poison_victim: Tensor
    poison_slot: Tensor
    poison_bounds: list[int]
    sizes: Tensor
    batch_size: int

    def steps(self, active: Tensor | None = None) -> Iterator[Step]:
        """The epoch's mini-batches; with ``active`` (ascending victim indices), only those
        victims' poison rows, victim ``active[i]`` as row ``i`` of the padded tensors."""
        victim, slot, bounds = self.poison_victim, self.poison_slot, self.poison_bounds
        poison_x, poison_y = self.poison_x, self.poison_y
        n_victims = len(self.sizes)
        if active is not None and len(active) < n_victims:
            position = torch.full((n_victims,), -1, device=victim.device)
            position[active] = torch.arange(len(active), device=victim.device)
            keep = position[victim] >= 0
            kept_before = torch.cat([keep.new_zeros(1, dtype=torch.long), keep.cumsum(0)])
            bounds = kept_before[bounds].tolist()
            victim, slot = position[victim[keep]], slot[keep]
            poison_x, poison_y = poison_x[keep], poison_y[keep]
            n_victims = len(active)
        for i, start in enumerate(range(0, len(self.y), self.batch_size)):
            lo, hi = bounds[i], bounds[i + 1]
            step_victim, step_slot = victim[lo:hi], slot[lo:hi]
            width = int(step_slot.max()) + 1 if hi > lo else 0
            rows = poison_x.new_zeros(n_victims, width, self.x.shape[1])
            labels = poison_y.new_zeros(n_victims, width)
            weight = self.x.new_zeros(n_victims, width)
            rows[step_victim, step_slot] = poison_x[lo:hi]
            labels[step_victim, step_slot] = poison_y[lo:hi]
            weight[step_victim, step_slot] = 1.0
            end = start + self.batch_size
            yield Step(self.x[start:end], self.y[start:end], rows, labels, weight)


class PoisonedEpochs(IterableDataset):
    """Yields one freshly shuffled `Epoch` per pass, from a seeded generator."""

    def __init__(
        self, train: Part, poison_sets: Sequence[PoisonSet], batch_size: int, seed: int
    ) -> None:
        self.x, self.y = torch.from_numpy(train.x), torch.from_numpy(train.y)
        self.poison_x = torch.from_numpy(np.concatenate([p.x for p in poison_sets]))
        self.poison_y = torch.from_numpy(np.concatenate([p.y for p in poison_sets]))
        counts = torch.tensor([len(p) for p in poison_sets])
        self.poison_victim = torch.repeat_interleave(torch.arange(len(poison_sets)), counts)
        self.sizes = (len(self.y) + counts).float()
        self.batch_size = min(batch_size, len(self.y))
        self.n_steps = -(-len(self.y) // self.batch_size)
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[Epoch]:
        order = torch.randperm(len(self.y), generator=self.generator)
        step = torch.randint(self.n_steps, (len(self.poison_y),), generator=self.generator)
        key, by_key = (step * len(self.sizes) + self.poison_victim).sort(stable=True)
        first_of_key = torch.searchsorted(key, key)
        bounds = torch.searchsorted(step[by_key], torch.arange(self.n_steps + 1))
        yield Epoch(
            self.x[order],
            self.y[order],
            self.poison_x[by_key],
            self.poison_y[by_key],
            self.poison_victim[by_key],
            torch.arange(len(key)) - first_of_key,
            bounds.tolist(),
            self.sizes,
            self.batch_size,
        )


class VictimProgress(L.Callback):
    """Advances a progress bar over victims as each one meets its stopping rule."""

    def __init__(self, bar: tqdm) -> None:
        self.bar, self.done = bar, 0

    def on_train_epoch_end(self, trainer: L.Trainer, module: MLP) -> None:
        stopped = int(module.stopped.sum())
        self.bar.update(stopped - self.done)
        self.done = stopped
        self.bar.set_postfix(epoch=trainer.current_epoch + 1, refresh=False)

    def on_train_end(self, trainer: L.Trainer, module: MLP) -> None:
        self.bar.update(module.n_victims - self.done)


@dataclass
class Victims:
    """Trained victims in the order of the poison sets they were trained on."""

    chunks: list[MLP]
    epochs: list[int]
    device: str = "cpu"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels, ``[n_victims, n]``."""
        return self.predict_proba(x).argmax(-1)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, ``[n_victims, n, classes]``."""
        features = torch.from_numpy(x)
        return np.concatenate([m.predict_proba(features).numpy() for m in self.chunks])

    def hidden(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([m.hidden(torch.from_numpy(x)).numpy() for m in self.chunks])


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
) -> Victims:
    """Train one victim per poison set on ``train ∪ poison``; see the module docstring."""
    n_features = train.x.shape[1]
    n_classes = int(train.y.max()) + 1
    probe = model(n_features=n_features, n_classes=n_classes, n_victims=1)
    batch_size = probe.batch_size
    if batched:
        params = sum(p.numel() for p in probe.parameters())
        max_poison = max((len(p) for p in poison_sets), default=0)
        size = victims_per_chunk(params, len(train), max_poison, batch_size, memory_mb)
    else:
        size = 1
    chunks, epochs, device = [], [], "cpu"
    with tqdm(
        total=len(poison_sets), desc=description, unit="victim", leave=False, mininterval=1.0
    ) as bar:
        for start in range(0, len(poison_sets), size):
            part = poison_sets[start : start + size]
            module = model(
                n_features=n_features, n_classes=n_classes, n_victims=len(part), seed=seed + start
            )
            data = PoisonedEpochs(train, part, batch_size, seed=seed + start)
            fit = trainer(
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[VictimProgress(bar)],
            )
            fit.fit(module, DataLoader(data, batch_size=None))
            device = describe_device(fit.strategy.root_device)
            chunks.append(module.eval().cpu())
            epochs.append(fit.current_epoch)
    log.info(
        "trained %d %s in %d chunk(s), %s epochs",
        len(poison_sets),
        description,
        len(chunks),
        _span(epochs),
    )
    return Victims(chunks, epochs, device)


def describe_device(device: torch.device) -> str:
    """The device victims trained on, as logged on every run (e.g. ``cuda:0 (NVIDIA H200)``)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _span(values: list[int]) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"
