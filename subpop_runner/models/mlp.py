"""The paper's UCI Adult model: one hidden layer of 10 ReLU units (Sec. 5.1).

"Trained for a maximum of 3000 iterations using scikit-learn default settings for all other
parameters" means `MLPClassifier(hidden_layer_sizes=(10,), max_iter=3000)`: Adam (lr 1e-3,
betas 0.9/0.999, eps 1e-8), mini-batches of min(200, n), L2 penalty 1e-4 on the weights added
to each batch loss as ``0.5 * alpha * ||W||^2 / batch_size``, Glorot-uniform init, and stopping
once the epoch's mean training loss has not improved by ``tol`` for more than
``n_iter_no_change`` epochs.

`MLP` holds ``n_victims`` such networks side by side as stacked parameter tensors (slice ``v``
is victim ``v``). Their losses are summed, so each victim's gradient is its own, and Adam is
elementwise, so each slice follows the update rule of a network trained alone. A victim that
met its stopping rule is frozen: its step is undone after each optimizer step.
One difference from sklearn: two logits with softmax cross-entropy instead of one logistic
output, so the same module serves datasets with more than two classes.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor, nn

from subpop_runner.training import Epoch, Step


class MLP(L.LightningModule):
    """``n_victims`` independent one-hidden-layer ReLU classifiers trained as one module.

    One Lightning training step is one epoch (see `subpop_runner.training.Epoch`); the
    mini-batch updates run inside it with manual optimisation, because Lightning's per-step
    machinery costs several times this model's compute.
    """

    def __init__(
        self,
        *,
        n_features: int,
        n_classes: int,
        n_victims: int = 1,
        hidden_units: int = 10,
        batch_size: int = 200,
        learning_rate: float = 1e-3,
        l2: float = 1e-4,
        tol: float = 1e-4,
        n_iter_no_change: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if hidden_units < 1:
            raise ValueError(f"hidden_units must be >= 1, got {hidden_units}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if learning_rate <= 0 or l2 < 0 or tol < 0 or n_iter_no_change < 1:
            raise ValueError("learning_rate must be > 0; l2, tol >= 0; n_iter_no_change >= 1")
        self.automatic_optimization = False
        self.batch_size = batch_size
        self.learning_rate, self.l2 = learning_rate, l2
        self.tol, self.n_iter_no_change = tol, n_iter_no_change
        generator = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(_glorot(n_victims, n_features, hidden_units, generator))
        self.b1 = nn.Parameter(_glorot(n_victims, n_features, hidden_units, generator, bias=True))
        self.w2 = nn.Parameter(_glorot(n_victims, hidden_units, n_classes, generator))
        self.b2 = nn.Parameter(_glorot(n_victims, hidden_units, n_classes, generator, bias=True))
        self.register_buffer("stopped", torch.zeros(n_victims, dtype=torch.bool))
        self.register_buffer("best_loss", torch.full((n_victims,), math.inf))
        self.register_buffer("no_improvement", torch.zeros(n_victims, dtype=torch.long))

    @property
    def n_victims(self) -> int:
        return self.w1.shape[0]

    def hidden(self, x: Tensor) -> Tensor:
        """Hidden-layer activations ``[V, n, hidden]`` of every victim for shared ``x [n, d]``."""
        return _shared_hidden(x, self.w1, self.b1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[V, n, classes]`` of every victim for shared ``x [n, d]``."""
        return torch.baddbmm(self.b2, self.hidden(x), self.w2)

    @torch.no_grad()
    def predict_proba(self, x: Tensor, chunk: int = 65536) -> Tensor:
        """Class probabilities ``[V, n, classes]`` for features ``[n, d]``."""
        x = x.to(self.device)
        parts = [torch.softmax(self(x[i : i + chunk]), -1) for i in range(0, len(x), chunk)]
        return torch.cat(parts, dim=1).cpu()

    def training_step(self, epoch: Epoch, batch_idx: int) -> None:
        optimizer = self.optimizers()
        # Only victims still training are computed: most stop long before the slowest one.
        active = (~self.stopped).nonzero().squeeze(1)
        loss_sum = torch.zeros(self.n_victims, device=self.device)
        for step in epoch.steps():
            loss, count = self._batch_loss(step, active)
            optimizer.zero_grad()
            self.manual_backward(loss.sum())
            self._step_active(optimizer)
            loss_sum.index_add_(0, active, loss.detach() * count)
        self._apply_stopping_rule(loss_sum / epoch.sizes)

    def _batch_loss(self, step: Step, active: Tensor) -> tuple[Tensor, Tensor]:
        """sklearn's per-batch loss of each active victim: mean CE + 0.5*l2*||W||^2 / batch size.

        Shared train rows go through all victims in one product (`_shared_hidden`); each
        victim's own poison rows, padded to ``[V, r, d]``, through its own weights (`baddbmm`).
        """
        w1, b1, w2, b2 = (p.index_select(0, active) for p in (self.w1, self.b1, self.w2, self.b2))
        poison_x, poison_y, poison_weight = (
            t.index_select(0, active) for t in (step.poison_x, step.poison_y, step.poison_weight)
        )
        poison_hidden = torch.relu(torch.baddbmm(b1, poison_x, w1))
        hidden = torch.cat([_shared_hidden(step.x, w1, b1), poison_hidden], dim=1)
        logits = torch.baddbmm(b2, hidden, w2)
        y = torch.cat([step.y.expand(len(active), -1), poison_y], dim=1)
        weight = torch.cat([poison_weight.new_ones(len(active), len(step.y)), poison_weight], 1)
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
        count = weight.sum(1)
        penalty = 0.5 * self.l2 * (w1.square().sum((1, 2)) + w2.square().sum((1, 2)))
        return ((ce * weight).sum(1) + penalty) / count, count

    def _step_active(self, optimizer: L.pytorch.core.optimizer.LightningOptimizer) -> None:
        """Optimizer step that leaves stopped victims where they are (Adam's momentum would
        otherwise keep moving them on a zero gradient)."""
        if not self.stopped.any():
            optimizer.step()
            return
        before = [p.detach().clone() for p in self.parameters()]
        optimizer.step()
        with torch.no_grad():
            for param, kept in zip(self.parameters(), before, strict=True):
                param[self.stopped] = kept[self.stopped]

    def _apply_stopping_rule(self, epoch_loss: Tensor) -> None:
        """sklearn's rule, per victim: stop after n_iter_no_change + 1 epochs without a
        ``tol`` improvement on the best mean training loss so far."""
        worse = epoch_loss > self.best_loss - self.tol
        self.no_improvement = torch.where(worse, self.no_improvement + 1, 0)
        self.best_loss = torch.minimum(self.best_loss, epoch_loss)
        self.stopped |= self.no_improvement > self.n_iter_no_change
        if bool(self.stopped.all()):
            self.trainer.should_stop = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate, eps=1e-8, fused=True)


def _shared_hidden(x: Tensor, w1: Tensor, b1: Tensor) -> Tensor:
    """ReLU hidden layer ``[V, n, hidden]`` of V victims on shared rows ``x [n, d]``.

    All first layers run as one ``[n, d] @ [d, V*hidden]`` product: the contiguous result keeps
    ReLU's backward pass cheap (3x faster here than a batched einsum).
    """
    n_victims, n_features, width = w1.shape
    weight = w1.permute(1, 0, 2).reshape(n_features, n_victims * width)
    flat = torch.relu(torch.addmm(b1.reshape(1, -1), x, weight))
    return flat.view(len(x), n_victims, width).transpose(0, 1)


def _glorot(
    n_victims: int, fan_in: int, fan_out: int, generator: torch.Generator, bias: bool = False
) -> Tensor:
    """sklearn's Glorot-uniform init (weights and biases share the layer's bound), per victim."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    shape = (n_victims, 1 if bias else fan_in, fan_out)
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound
