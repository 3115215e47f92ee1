"""The paper's UCI Adult model: one hidden layer of 10 ReLU units (Sec. 5.1).

"Trained for a maximum of 3000 iterations using scikit-learn default settings for all other
parameters" means `MLPClassifier(hidden_layer_sizes=(10,), max_iter=3000)`: Adam (lr 1e-3,
betas 0.9/0.999, eps 1e-8), mini-batches of min(200, n), L2 penalty 1e-4 on the weights added
to each batch loss as ``0.5 * alpha * ||W||^2 / batch_size``, Glorot-uniform init, and stopping
once the epoch's mean training loss has not improved by ``tol`` for more than
``n_iter_no_change`` epochs.

For two classes the output is one logistic unit, as in sklearn; for more, softmax logits.

`MLP` holds ``n_victims`` such networks side by side: one parameter tensor ``[P, V]`` with a
column per victim. Each victim's gradient is computed from its own batch only, and Adam is
elementwise, so each column follows the update rule of a network trained alone. Only victims
still training are computed; a victim that met its stopping rule gets a zero gradient and a
zeroed Adam momentum, which makes Adam's update of it exactly zero.

Gradients are derived by hand (`loss_and_gradients`, checked against autograd in the tests):
for a 10-unit network autograd's bookkeeping cost more than the arithmetic (0.35 vs 1.2 ms per
mini-batch for one victim, measured here), and a victim grid runs hundreds of thousands of them.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor, nn

from subpop_runner.data.epochs import Epoch


class MLP(L.LightningModule):
    """``n_victims`` independent one-hidden-layer ReLU classifiers trained as one module.

    ``weights [P, V]`` holds victim v's parameters in column v; `views` splits it into
    ``w1 [d, hidden, V]``, ``b1 [hidden, V]``, ``w2 [outputs, hidden, V]``, ``b2 [outputs, V]``.
    With victims innermost, shared rows go through every victim's first layer in one
    ``[n, d] @ [d, hidden*V]`` product, and the output layer and its gradients are elementwise
    products on contiguous ``[n, hidden, V]`` tensors.

    One Lightning training step is one epoch (see `subpop_runner.data.epochs.Epoch`); the
    mini-batch updates run inside it with manual optimisation, because Lightning's per-step
    machinery costs several times this model's compute.
    """

    layers = ("hidden",)
    penultimate = "hidden"  # the last layer's input

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
        n_outputs = 1 if n_classes == 2 else n_classes
        self.shapes = (
            (n_features, hidden_units),
            (hidden_units,),
            (n_outputs, hidden_units),
            (n_outputs,),
        )
        generator = torch.Generator().manual_seed(seed)
        w1 = _glorot(n_victims, n_features, hidden_units, generator)
        b1 = _glorot(n_victims, n_features, hidden_units, generator, bias=True)
        w2 = _glorot(n_victims, hidden_units, n_outputs, generator).transpose(1, 2)
        b2 = _glorot(n_victims, hidden_units, n_outputs, generator, bias=True)
        columns = [t.reshape(n_victims, -1) for t in (w1, b1, w2, b2)]
        self.weights = nn.Parameter(torch.cat(columns, dim=1).T.contiguous())
        self.register_buffer("stopped", torch.zeros(n_victims, dtype=torch.bool))
        self.register_buffer("best_loss", torch.full((n_victims,), math.inf))
        self.register_buffer("no_improvement", torch.zeros(n_victims, dtype=torch.long))

    @property
    def n_victims(self) -> int:
        return self.weights.shape[1]

    def views(self, weights: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Views ``w1, b1, w2, b2`` of ``weights [P, V]`` (or of anything shaped like it)."""
        sizes = [math.prod(shape) for shape in self.shapes]
        parts = weights.split(sizes)
        return tuple(p.view(*shape, -1) for p, shape in zip(parts, self.shapes, strict=True))

    @torch.no_grad()
    def representation(self, x: Tensor, layer: str) -> Tensor:
        """Hidden-layer activations ``[V, n, hidden]`` of every victim for shared ``x [n, d]``
        (``layer="hidden"``, the paper's ClusterMatch representation for this model)."""
        if layer not in self.layers:
            raise ValueError(f"no layer {layer!r}; valid: {', '.join(self.layers)}")
        w1, b1, _, _ = self.views(self.weights)
        return _shared_hidden(x.to(self.device), w1, b1).permute(2, 0, 1).cpu()

    @torch.no_grad()
    def last_layer(self) -> tuple[Tensor, Tensor]:
        """Every victim's output layer: weights ``[V, outputs, hidden]``, bias ``[V, outputs]``
        (one logistic output for two classes)."""
        _, _, w2, b2 = self.views(self.weights.detach())
        return w2.permute(2, 0, 1).cpu(), b2.T.cpu()

    def victim(self, v: int) -> nn.Module:
        """Victim ``v`` alone as a torch network (a copy): hidden layer, ReLU, output layer."""
        w1, b1, w2, b2 = (t[..., v] for t in self.views(self.weights.detach().cpu()))
        hidden, output = nn.Linear(*w1.shape), nn.Linear(*w2.shape[::-1])
        with torch.no_grad():
            for layer, weight, bias in ((hidden, w1.T, b1), (output, w2, b2)):
                layer.weight.copy_(weight)
                layer.bias.copy_(bias)
        return nn.Sequential(hidden, nn.ReLU(), output)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[V, n, outputs]`` of every victim for shared ``x [n, d]``."""
        w1, b1, w2, b2 = self.views(self.weights)
        return _output(_shared_hidden(x, w1, b1), w2, b2).permute(2, 0, 1)

    @torch.no_grad()
    def predict_proba(self, x: Tensor, chunk: int = 4096) -> Tensor:
        """Class probabilities ``[V, n, classes]`` for features ``[n, d]``."""
        x = x.to(self.device)
        parts = [_probabilities(self(x[i : i + chunk])) for i in range(0, len(x), chunk)]
        return torch.cat(parts, dim=1).cpu()

    @torch.no_grad()  # gradients come from `loss_and_gradients`, not autograd
    def training_step(self, epoch: Epoch, batch_idx: int) -> None:
        # The torch optimizer itself: Lightning's wrapper runs hooks on every call that cost more
        # than this model's step (so trainer.global_step stays 0; epochs are what count here).
        optimizer = self.optimizers().optimizer
        # Only victims still training are computed: most stop long before the slowest one.
        active = (~self.stopped).nonzero().squeeze(1)
        everyone = len(active) == self.n_victims
        loss_sum = torch.zeros(self.n_victims, device=self.device)
        for step in epoch.steps(None if everyone else active):
            weights = self.weights if everyone else self.weights.index_select(1, active)
            loss, count, grads = loss_and_gradients(*step, *self.views(weights), self.l2)
            grad = torch.cat([g.reshape(-1, len(active)) for g in grads])
            if not everyone:
                grad = torch.zeros_like(self.weights).index_copy_(1, active, grad)
            self.weights.grad = grad
            optimizer.step()
            loss_sum.index_add_(0, active, loss * count)
        self._apply_stopping_rule(loss_sum / epoch.sizes)

    def _apply_stopping_rule(self, epoch_loss: Tensor) -> None:
        """sklearn's rule, per victim: stop after n_iter_no_change + 1 epochs without a
        ``tol`` improvement on the best mean training loss so far."""
        worse = epoch_loss > self.best_loss - self.tol
        self.no_improvement = torch.where(worse, self.no_improvement + 1, 0)
        self.best_loss = torch.minimum(self.best_loss, epoch_loss)
        newly = ~self.stopped & (self.no_improvement > self.n_iter_no_change)
        if bool(newly.any()):
            # With their gradient zero from now on (they are not computed) and their momentum
            # zeroed, Adam's update of these victims is exactly zero.
            self.optimizers().optimizer.state[self.weights]["exp_avg"][:, newly] = 0.0
            self.stopped |= newly
        if bool(self.stopped.all()):
            self.trainer.should_stop = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate, eps=1e-8, fused=True)


def _shared_hidden(x: Tensor, w1: Tensor, b1: Tensor) -> Tensor:
    """ReLU hidden layer ``[n, hidden, V]`` of V victims on shared rows ``x [n, d]``, as one
    ``[n, d] @ [d, hidden*V]`` product."""
    n_features, width, n_victims = w1.shape
    flat = torch.addmm(b1.reshape(1, -1), x, w1.reshape(n_features, -1))
    return flat.relu_().view(len(x), width, n_victims)


def _output(hidden: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """Output layer: logits ``[rows, outputs, V]`` from ``hidden [rows, hidden, V]``."""
    return (hidden.unsqueeze(1) * w2).sum(2) + b2


def loss_and_gradients(
    x: Tensor,
    y: Tensor,
    poison_x: Tensor,
    poison_y: Tensor,
    poison_weight: Tensor,
    keep: Tensor | None,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    l2: float,
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """sklearn's batch loss of each victim, ``[V]``, its batch size, and the loss gradients
    w.r.t. ``(w1, b1, w2, b2)`` (laid out as in `MLP`).

    Shared rows ``x [n, d]`` go through every victim; victim v's own poison rows are
    ``poison_x[v]`` where ``poison_weight[v]`` is 1 (0 marks padding); ``keep [n, V]``, when
    given, weighs the shared rows per victim (0: a row a defense removed from that victim).
    The loss is the mean row loss plus ``0.5 * l2 * ||W||^2``, both divided by the victim's
    batch size.
    """
    shared = len(y) if keep is None else keep.sum(0)
    # A victim whose block a defense emptied still takes its L2 step (batch size 1, not 0).
    count = (shared + poison_weight.sum(1)).clamp_(min=1)
    scale = 1.0 / count
    hidden = _shared_hidden(x, w1, b1)
    row_scale = scale[None] if keep is None else keep * scale
    row_loss, d_hidden, grad_w2, grad_b2 = _head(hidden, y.unsqueeze(1), row_scale, w2, b2)
    loss = (row_loss if keep is None else row_loss * keep).sum(0)
    grad_w1 = (x.T @ d_hidden.view(len(x), -1)).view_as(w1)
    grad_b1 = d_hidden.sum(0)
    if poison_x.shape[1]:  # some victim has poison rows in this step
        w1_by_victim = w1.permute(2, 0, 1).contiguous()  # strided batches fall back to a loop
        own = torch.baddbmm(b1.T.unsqueeze(1), poison_x, w1_by_victim).relu_()
        weight = poison_weight.T
        row_loss, d_own, own_w2, own_b2 = _head(
            own.permute(1, 2, 0), poison_y.T, weight * scale, w2, b2
        )
        loss += (row_loss * weight).sum(0)
        grad_w1 += torch.bmm(poison_x.transpose(1, 2), d_own.permute(2, 0, 1)).permute(1, 2, 0)
        grad_b1 += d_own.sum(0)
        grad_w2 += own_w2
        grad_b2 += own_b2
    loss += 0.5 * l2 * (w1.square().sum((0, 1)) + w2.square().sum((0, 1)))
    grad_w1 += w1 * (l2 * scale)
    grad_w2 += w2 * (l2 * scale)
    return loss * scale, count, (grad_w1, grad_b1, grad_w2, grad_b2)


def _head(
    hidden: Tensor, labels: Tensor, row_scale: Tensor, w2: Tensor, b2: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Output layer and loss on ``hidden [rows, hidden, V]`` (after ReLU) with ``labels
    [rows, V]`` (or ``[rows, 1]``, shared): each row's loss ``[rows, V]``, and the gradients
    of the rows' losses times ``row_scale [rows or 1, V]`` w.r.t. the hidden layer's input,
    ``w2`` and ``b2``.
    """
    logits = _output(hidden, w2, b2)
    if logits.shape[1] == 1:  # one logistic unit: log-loss of sigmoid(z) is softplus(z) - yz
        z, target = logits.squeeze(1), labels.to(logits.dtype)
        row_loss = nn.functional.softplus(z) - z * target
        d_logits = (torch.sigmoid(z) - target).mul_(row_scale).unsqueeze(1)
        d_hidden = d_logits * w2
    else:
        log_p = torch.log_softmax(logits, 1)
        target = nn.functional.one_hot(labels, logits.shape[1]).transpose(1, 2)
        row_loss = -(log_p * target).sum(1)
        d_logits = (log_p.exp() - target).mul_(row_scale.unsqueeze(1))
        d_hidden = (d_logits.unsqueeze(2) * w2).sum(1)
    grad_w2 = (d_logits.unsqueeze(2) * hidden.unsqueeze(1)).sum(0)
    # ReLU's backward, the kernel autograd itself uses: a boolean mask costs 10x more here.
    d_hidden = torch.ops.aten.threshold_backward(d_hidden, hidden, 0.0)
    return row_loss, d_hidden, grad_w2, d_logits.sum(0)


def _probabilities(logits: Tensor) -> Tensor:
    """Class probabilities ``[V, n, classes]`` from logits ``[V, n, outputs]``."""
    if logits.shape[-1] == 1:
        positive = torch.sigmoid(logits)
        return torch.cat([1 - positive, positive], dim=-1)
    return torch.softmax(logits, dim=-1)


def _glorot(
    n_victims: int, fan_in: int, fan_out: int, generator: torch.Generator, bias: bool = False
) -> Tensor:
    """sklearn's Glorot-uniform init (weights and biases share the layer's bound), per victim:
    ``[V, fan_in, fan_out]``, or ``[V, fan_out]`` for a bias."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    shape = (n_victims, fan_out) if bias else (n_victims, fan_in, fan_out)
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound
