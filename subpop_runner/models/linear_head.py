"""The authors' "last layer" head (VGG-LL, paper Sec. 5.2): one linear softmax layer on a
frozen backbone's average-pooled features, L2 0.01 on its weights, Adam 1e-3, batch 32,
12 epochs.

`LinearHead` holds ``n_victims`` such heads side by side (``weights [d, C·V]``): the shared
train rows of a step go through every victim's head in one matrix product, each victim adds
its own poison rows, and each victim's loss depends on its own columns only, so summing the
losses gives every head the gradient it would get alone; Adam is elementwise. The L2 term is
Keras-style, ``l2 * ||W||^2`` on every batch loss, as the authors' code does; its gradient
``2 * l2 * W`` is added by Adam's weight decay rather than through autograd (the same update,
without two extra passes over millions of weights per step).
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
    penultimate = None  # its input, the features it reads

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
    def last_layer(self) -> tuple[Tensor, Tensor]:
        """Every victim's weights ``[V, C, d]`` and bias ``[V, C]``."""
        n_features = self.weights.shape[0]
        weights = self.weights.detach().view(n_features, self.n_victims, self.n_classes)
        return weights.permute(1, 2, 0).cpu(), self.bias.detach().view(self.n_victims, -1).cpu()

    def victim(self, v: int) -> nn.Module:
        """Victim ``v`` alone as a torch linear layer (a copy)."""
        weights, bias = self.last_layer()
        layer = nn.Linear(weights.shape[2], self.n_classes)
        with torch.no_grad():
            layer.weight.copy_(weights[v])
            layer.bias.copy_(bias[v])
        return layer

    @torch.no_grad()
    def representation(self, x: Tensor, layer: str) -> Tensor:
        if layer not in self.layers:
            raise ValueError(f"no layer {layer!r}; valid: {', '.join(self.layers)}")
        return self(x.to(self.device)).cpu()

    def training_step(self, epoch: Epoch, batch_idx: int) -> None:
        # The torch optimizer itself: Lightning's wrapper runs hooks on every call that cost
        # more than a linear head's step (one training step is one epoch here).
        optimizer = self.optimizers().optimizer
        for rows in epoch.rows():
            optimizer.zero_grad(set_to_none=True)
            loss = self._loss(
                rows.x, rows.y, rows.poison_x, rows.poison_y, rows.poison_victim, rows.keep
            )
            loss.backward()
            optimizer.step()
        if self.current_epoch + 1 >= self.epochs:
            self.stopped.fill_(True)
            self.trainer.should_stop = True

    def _loss(
        self,
        x: Tensor,
        y: Tensor,
        poison_x: Tensor,
        poison_y: Tensor,
        victim: Tensor,
        keep: Tensor | None = None,
    ) -> Tensor:
        """Sum over victims of each victim's mean cross-entropy on its batch: the shared rows
        it keeps (``keep [n, V]``, all when None) and the poison rows of that victim
        (``victim`` names each poison row's victim)."""
        n_victims, n_classes = self.n_victims, self.n_classes
        logits = torch.addmm(self.bias, x, self.weights).view(-1, n_classes)
        shared = nn.functional.cross_entropy(
            logits, y.repeat_interleave(n_victims), reduction="none"
        ).view(len(y), n_victims)
        if keep is not None:
            shared = shared * keep
        per_victim = shared.sum(0)
        kept = len(y) if keep is None else keep.sum(0)
        count = (kept + torch.bincount(victim, minlength=n_victims)).clamp(min=1)
        if len(victim):
            # Each poison row meets only its own victim's columns: a gather of P heads, not
            # a product with all V of them.
            own_weights = self.weights.view(-1, n_victims, n_classes).index_select(1, victim)
            own_bias = self.bias.view(n_victims, n_classes).index_select(0, victim)
            own = torch.einsum("pd,dpc->pc", poison_x, own_weights) + own_bias
            own_loss = nn.functional.cross_entropy(own, poison_y, reduction="none")
            per_victim = per_victim.index_add(0, victim, own_loss)
        return (per_victim / count).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # One fused kernel per step: with hundreds of victims the heads hold millions of
        # parameters, and Adam's per-element work outweighs the batch's matrix products.
        # Adam's (coupled) weight decay w adds w * W to the gradient, which is the gradient
        # of the Keras L2 term l2 * ||W||^2 when w = 2 * l2; Keras leaves the bias alone.
        groups = [
            {"params": [self.weights], "weight_decay": 2 * self.l2},
            {"params": [self.bias], "weight_decay": 0.0},
        ]
        return torch.optim.Adam(groups, lr=self.learning_rate, fused=True)
