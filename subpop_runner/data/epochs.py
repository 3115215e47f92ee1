"""How a victim's training data are drawn, epoch by epoch, when many victims train at once.

Every victim's epoch is the shared train set plus its *own* poison set. `PoisonedEpochs`
yields one `Epoch` per pass; `Epoch.rows` cuts it into mini-batches that share the train rows
and add the poison rows drawn into each step (`Epoch.steps` pads those per victim). Batched
heads (the MLP, the linear head) consume them; a victim trained alone (V=1) gets the same
procedure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from subpop_runner.types import Part, PoisonSet


class Rows(NamedTuple):
    """One mini-batch: a block of train rows shared by all victims, plus the poison rows drawn
    into this step, each with its victim and its rank among that victim's rows (``slot``)."""

    x: Tensor
    y: Tensor
    poison_x: Tensor
    poison_y: Tensor
    poison_victim: Tensor
    poison_slot: Tensor
    keep: Tensor | None = None


class Step(NamedTuple):
    """One mini-batch: a block of train rows shared by all victims, plus each victim's own
    poison rows for this step, padded to ``[V, r, d]`` (``poison_weight`` 0 marks padding)."""

    x: Tensor
    y: Tensor
    poison_x: Tensor
    poison_y: Tensor
    poison_weight: Tensor
    keep: Tensor | None = None


@dataclass
class Epoch:
    """One epoch's data for V victims; a batched head runs its mini-batch updates over
    `steps()` (poison rows padded per victim) or `rows()` (unpadded).

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
    keep: Tensor | None = None

    def rows(self, active: Tensor | None = None) -> Iterator[Rows]:
        """The epoch's mini-batches with each step's poison rows unpadded; with ``active``
        (ascending victim indices), only those victims' rows, victim ``active[i]`` as ``i``."""
        victim, slot, bounds = self.poison_victim, self.poison_slot, self.poison_bounds
        poison_x, poison_y, keep = self.poison_x, self.poison_y, self.keep
        if active is not None and len(active) < len(self.sizes):
            position = torch.full((len(self.sizes),), -1, device=victim.device)
            position[active] = torch.arange(len(active), device=victim.device)
            selected = position[victim] >= 0
            kept_before = torch.cat([selected.new_zeros(1, dtype=torch.long), selected.cumsum(0)])
            bounds = kept_before[bounds].tolist()
            victim, slot = position[victim[selected]], slot[selected]
            poison_x, poison_y = poison_x[selected], poison_y[selected]
            keep = None if self.keep is None else self.keep[:, active]
        for i, start in enumerate(range(0, len(self.y), self.batch_size)):
            lo, hi, end = bounds[i], bounds[i + 1], start + self.batch_size
            yield Rows(
                self.x[start:end],
                self.y[start:end],
                poison_x[lo:hi],
                poison_y[lo:hi],
                victim[lo:hi],
                slot[lo:hi],
                None if keep is None else keep[start:end],
            )

    def steps(self, active: Tensor | None = None) -> Iterator[Step]:
        """`rows` with each step's poison rows padded to ``[V, r, d]``, for heads that compute
        every victim's poison rows in one batched product."""
        n_victims = len(self.sizes) if active is None else len(active)
        for x, y, poison_x, poison_y, victim, slot, keep in self.rows(active):
            width = int(slot.max()) + 1 if len(slot) else 0
            padded = poison_x.new_zeros(n_victims, width, *self.x.shape[1:])
            labels = poison_y.new_zeros(n_victims, width)
            weight = self.x.new_zeros(n_victims, width)
            padded[victim, slot] = poison_x
            labels[victim, slot] = poison_y
            weight[victim, slot] = 1.0
            yield Step(x, y, padded, labels, weight, keep)


class PoisonedEpochs(IterableDataset):
    """Yields one freshly shuffled `Epoch` per pass, from a seeded generator; ``keep``: each
    victim's train rows (all when None)."""

    def __init__(
        self,
        train: Part,
        poison_sets: Sequence[PoisonSet],
        batch_size: int,
        seed: int,
        keep: np.ndarray | None = None,
    ) -> None:
        self.x, self.y = torch.from_numpy(train.x), torch.from_numpy(train.y)
        self.poison_x = torch.from_numpy(np.concatenate([p.x for p in poison_sets]))
        self.poison_y = torch.from_numpy(np.concatenate([p.y for p in poison_sets]))
        counts = torch.tensor([len(p) for p in poison_sets])
        self.poison_victim = torch.repeat_interleave(torch.arange(len(poison_sets)), counts)
        self.keep = None if keep is None else torch.from_numpy(keep.T.astype(np.float32))
        kept = len(self.y) if keep is None else torch.from_numpy(keep.sum(1))
        self.sizes = (kept + counts).float()
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
            None if self.keep is None else self.keep[order],
        )
