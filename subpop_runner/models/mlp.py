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

from subpop_runner.training import Epoch


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
        """Hidden-layer activations ``[V, n, hidden]`` of every victim for shared ``x [n, d]``.

        All victims' first layers run as one ``[n, d] @ [d, V*hidden]`` product: a contiguous
        result keeps ReLU's backward pass cheap (3x faster than a batched einsum here).
        """
        n_victims, n_features, width = self.w1.shape
        weight = self.w1.permute(1, 0, 2).reshape(n_features, n_victims * width)
        flat = torch.relu(torch.addmm(self.b1.reshape(1, -1), x, weight))
        return flat.view(len(x), n_victims, width).transpose(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[V, n, classes]`` of every victim for shared ``x [n, d]``."""
        return torch.baddbmm(self.b2, self.hidden(x), self.w2)

    def forward_rows(self, x: Tensor, victim: Tensor) -> Tensor:
        """Logits ``[m, classes]`` of row ``i`` of ``x`` under victim ``victim[i]`` only."""
        h = torch.relu(torch.einsum("md,mdh->mh", x, self.w1[victim]) + self.b1[victim, 0])
        return torch.einsum("mh,mhc->mc", h, self.w2[victim]) + self.b2[victim, 0]

    @torch.no_grad()
    def predict_proba(self, x: Tensor, chunk: int = 65536) -> Tensor:
        """Class probabilities ``[V, n, classes]`` for features ``[n, d]``."""
        x = x.to(self.device)
        parts = [torch.softmax(self(x[i : i + chunk]), -1) for i in range(0, len(x), chunk)]
        return torch.cat(parts, dim=1).cpu()

    def training_step(self, epoch: Epoch, batch_idx: int) -> None:
        optimizer = self.optimizers()
        loss_sum = torch.zeros(self.n_victims, device=self.device)
        for step in epoch.steps():
            loss, count = self._batch_loss(step)
            optimizer.zero_grad()
            self.manual_backward((loss * ~self.stopped).sum())
            self._step_active(optimizer)
            loss_sum += loss.detach() * count
        self._apply_stopping_rule(loss_sum / epoch.sizes)

    def _batch_loss(self, step: Epoch) -> tuple[Tensor, Tensor]:
        """sklearn's per-batch loss of every victim: mean CE + 0.5*l2*||W||^2 / batch size."""
        if self.n_victims == 1:  # a lone victim's poison rows simply join the batch
            step = step._replace(
                x=torch.cat([step.x, step.poison_x]),
                y=torch.cat([step.y, step.poison_y]),
                poison_y=step.poison_y[:0],
            )
        ce = nn.functional.cross_entropy(
            self(step.x).transpose(1, 2), step.y.expand(self.n_victims, -1), reduction="none"
        ).sum(1)
        count = torch.full((self.n_victims,), float(len(step.y)), device=self.device)
        if len(step.poison_y):
            row_ce = nn.functional.cross_entropy(
                self.forward_rows(step.poison_x, step.poison_victim),
                step.poison_y,
                reduction="none",
            )
            ce = ce.index_add(0, step.poison_victim, row_ce)
            count = count.index_add(0, step.poison_victim, torch.ones_like(row_ce))
        penalty = 0.5 * self.l2 * (self.w1.square().sum((1, 2)) + self.w2.square().sum((1, 2)))
        return (ce + penalty) / count, count

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


def _glorot(
    n_victims: int, fan_in: int, fan_out: int, generator: torch.Generator, bias: bool = False
) -> Tensor:
    """sklearn's Glorot-uniform init (weights and biases share the layer's bound), per victim."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    shape = (n_victims, 1 if bias else fan_in, fan_out)
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound
