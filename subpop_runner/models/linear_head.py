"""The authors' "last layer" head (VGG-LL, paper Sec. 5.2): one linear softmax layer on a
frozen backbone's average-pooled features, L2 0.01 on its weights, Adam 1e-3, batch 32,
12 epochs.

`LinearHead` holds ``n_victims`` such heads side by side (``weights [d, C·V]``): the shared
train rows of a step go through every victim's head in one matrix product, each victim adds
its own poison rows, and each victim's loss depends on its own columns only, so summing the
losses gives every head the gradient it would get alone; Adam is elementwise. The L2 term
is added Keras-style, ``l2 * ||W||^2`` on every batch loss, as the authors' code does.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor, nn

from subpop_runner.data.epochs import Epoch


class LinearHead(L.LightningModule):
    """``n_victims`` linear softmax classifiers trained for ``epochs`` epochs as one module."""

    layers = ("logits",)

    def __init__(
        self,
        *,
        n_features: int,
        n_classes: int,
        n_victims: int = 1,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        l2: float = 0.01,
        epochs: int = 12,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.batch_size, self.learning_rate, self.l2, self.epochs = (
            batch_size,
            learning_rate,
            l2,
            epochs,
        )
        self.n_classes = n_classes
        generator = torch.Generator().manual_seed(seed)
        bound = math.sqrt(6.0 / (n_features + n_classes))  # Keras' Glorot-uniform
        weights = torch.rand(n_features, n_classes * n_victims, generator=generator) * 2 - 1
        self.weights = nn.Parameter(weights * bound)
        self.bias = nn.Parameter(torch.zeros(n_classes * n_victims))
        self.register_buffer("stopped", torch.zeros(n_victims, dtype=torch.bool))

    @property
    def n_victims(self) -> int:
        return self.bias.shape[0] // self.n_classes

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[V, n, C]`` of every victim for shared ``x [n, d]``."""
        flat = torch.addmm(self.bias, x, self.weights)
        return flat.view(len(x), self.n_victims, self.n_classes).transpose(0, 1)

    @torch.no_grad()
    def predict_proba(self, x: Tensor, chunk: int = 4096) -> Tensor:
        """Class probabilities ``[V, n, classes]`` for features ``[n, d]``."""
        x = x.to(self.device)
        parts = [self(x[i : i + chunk]).softmax(-1) for i in range(0, len(x), chunk)]
        return torch.cat(parts, dim=1).cpu()

    @torch.no_grad()
    def representation(self, x: Tensor, layer: str) -> Tensor:
        if layer not in self.layers:
            raise ValueError(f"no layer {layer!r}; valid: {', '.join(self.layers)}")
        return self(x.to(self.device)).cpu()

    def training_step(self, epoch: Epoch, batch_idx: int) -> None:
        # The torch optimizer itself: Lightning's wrapper runs hooks on every call that cost
        # more than a linear head's step (one training step is one epoch here).
        optimizer = self.optimizers().optimizer
        for step in epoch.steps():
            optimizer.zero_grad(set_to_none=True)
            self._loss(*step).backward()
            optimizer.step()
        if self.current_epoch + 1 >= self.epochs:
            self.stopped.fill_(True)
            self.trainer.should_stop = True

    def _loss(self, x: Tensor, y: Tensor, poison_x: Tensor, poison_y: Tensor, weight: Tensor):
        """Sum over victims of each victim's mean cross-entropy on its batch (shared rows and
        its own poison rows) plus its L2 term."""
        shared = nn.functional.cross_entropy(
            self(x).transpose(1, 2), y.expand(self.n_victims, -1), reduction="none"
        ).sum(1)
        count = len(y) + weight.sum(1)
        if poison_x.shape[1]:
            weights = self.weights.view(-1, self.n_victims, self.n_classes).transpose(0, 1)
            bias = self.bias.view(self.n_victims, 1, self.n_classes)
            own = torch.baddbmm(bias, poison_x, weights)
            own_loss = nn.functional.cross_entropy(own.transpose(1, 2), poison_y, reduction="none")
            shared = shared + (own_loss * weight).sum(1)
        per_victim_l2 = self.weights.square().view(-1, self.n_victims, self.n_classes).sum((0, 2))
        return (shared / count + self.l2 * per_victim_l2).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # One fused kernel per step: with hundreds of victims the heads hold millions of
        # parameters, and Adam's per-element work outweighs the batch's matrix products.
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate, fused=True)
