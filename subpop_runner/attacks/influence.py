"""The influence attack, INF (paper Sec. 4.2.2, after Koh & Liang 2017), for heads on fixed
features (the Adult MLP on its inputs, a linear head on a frozen backbone).

Koh & Liang: moving a training point z by δ changes a test loss by about
−∇θL(test)ᵀ H⁻¹ ∇x∇θL(z) δ, H the Hessian of the training objective. With
s_test = H⁻¹ ∇θ L(targets), each step moves every poison along −sign(∇x s_testᵀ ∇θ L(poison))
by ``lr`` (a signed step), puts it back in the domain, and refits the head on D_aux ∪ poisons.

Choices the paper leaves open, and why:
- The head refits on the attacker's own data, D_aux ∪ poisons (the threat model), by L-BFGS
  from its current parameters, minimising the mean cross-entropy plus ``damping``/2 · ‖θ‖²;
  H is that objective's Hessian, so ``damping`` (Koh & Liang's damping term) also keeps H
  invertible where the plain loss is not convex (the MLP).
- s_test by the exact Hessian when the head has at most ``exact_max`` parameters, else by
  conjugate gradients on Hessian-vector products (``cg_iterations``). No LiSSA: it diverges
  without per-model tuning.
- Stop after ``steps`` steps, or once the targets' loss under the refit head has not risen for
  ``patience`` steps; the poisons returned are those of the step with the highest targets'
  loss. The trace's ``objective`` is that targets' loss (step 0: the label-flip start).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call
from torch.nn.functional import cross_entropy

from subpop_runner.attacks.domain import InputDomain
from subpop_runner.attacks.optimization import Job, OptimizedAttack, flat
from subpop_runner.errors import ConfigError
from subpop_runner.training.differentiable import Differentiable, two_class
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import FEATURES, Victims
from subpop_runner.types import Part, Splits


@dataclass
class AuxFeatures:
    """The attacker's fixed features of D_aux, and its labels."""

    x: Tensor
    y: Tensor


class Influence(OptimizedAttack):
    name = "influence"
    label = "INF"

    def __init__(
        self,
        *,
        steps: int = 20,
        damping: float = 0.01,
        patience: int = 3,
        refit_iterations: int = 20,
        exact_max: int = 100,
        cg_iterations: int = 50,
        **common: object,
    ) -> None:
        """``common``: `OptimizedAttack`'s other settings (alpha, label_rule, lr, epsilon)."""
        super().__init__(steps=steps, **common)
        self.damping, self.patience = damping, patience
        self.refit_iterations, self.exact_max = refit_iterations, exact_max
        self.cg_iterations = cg_iterations

    def check(self, splits: Splits, regime: Regime) -> None:
        super().check(splits, regime)
        if not regime.fixed_features:
            raise ConfigError(
                "attack=influence: needs a head on fixed features, which it refits every step "
                "(model=mlp, efficientnet_ll, vgg_ll); an end-to-end network cannot be refit "
                "in seconds; use attack=gradient_optimization"
            )

    def prepare(self, attacker: Victims, aux: Part, device: torch.device) -> AuxFeatures:
        features = attacker.representation(aux.x, FEATURES)[0]
        return AuxFeatures(
            torch.from_numpy(np.array(features, np.float32)).to(device),
            torch.from_numpy(aux.y).to(device),
        )

    def move(
        self, group: list[Job], model: Differentiable, domain: InputDomain, context: AuxFeatures
    ) -> list[tuple[np.ndarray, dict[str, list]]]:
        """Each subpopulation on its own: each refits its own head."""
        return [self.move_one(job, model, domain, context) for job in group]

    def move_one(
        self, job: Job, model: Differentiable, domain: InputDomain, context: AuxFeatures
    ) -> tuple[np.ndarray, dict[str, list]]:
        head, poison = Head(model), job.poison
        target_h, target_y = context.x[torch.from_numpy(job.members)], job.target_y
        start = torch.from_numpy(poison.x).to(target_h.device)
        labels = torch.from_numpy(poison.y).to(target_h.device)
        relaxed = start.clone()
        theta = head.initial
        best, best_x, stalled = -np.inf, start, 0  # step 0 (the start) always replaces it
        trace: dict[str, list] = {"step": [], "objective": []}
        for step in range(self.steps + 1):
            x = domain.project(relaxed)
            with torch.no_grad():
                poison_h = model.features(x)
            rows = (torch.cat([context.x, poison_h]), torch.cat([context.y, labels]))
            theta = self.refit(head, theta, rows)
            target_loss = head.loss(theta, target_h, target_y)
            trace["step"].append(step)
            trace["objective"].append(float(target_loss))
            if float(target_loss) > best:
                best, best_x, stalled = float(target_loss), x, 0
            else:
                stalled += 1
            if step == self.steps or stalled >= self.patience:
                break
            s_test = self.inverse_hessian_product(
                head, theta, rows, torch.func.grad(head.loss)(theta, target_h, target_y)
            )
            relaxed.requires_grad_(True)
            poison_h = model.features(domain.straight_through(relaxed))
            at = theta.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(
                head.loss(at, poison_h, labels, total=True), at, create_graph=True
            )
            (along,) = torch.autograd.grad(gradient @ s_test, relaxed)
            with torch.no_grad():
                relaxed = domain.clamp(relaxed.detach() - self.lr * along.sign(), start)
        return best_x.cpu().numpy().astype(poison.x.dtype), trace

    def objective(self, head: Head, theta: Tensor, rows: tuple[Tensor, Tensor]) -> Tensor:
        """The attacker's training objective: mean cross-entropy + damping/2 · ‖θ‖²."""
        return head.loss(theta, *rows) + 0.5 * self.damping * theta.square().sum()

    def refit(self, head: Head, theta: Tensor, rows: tuple[Tensor, Tensor]) -> Tensor:
        """The head refit on ``rows`` by L-BFGS from ``theta``."""
        theta = theta.detach().clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            [theta], max_iter=self.refit_iterations, line_search_fn="strong_wolfe"
        )

        def closure() -> Tensor:
            optimizer.zero_grad()
            value = self.objective(head, theta, rows)
            value.backward()
            return value

        optimizer.step(closure)
        return theta.detach()

    def inverse_hessian_product(
        self, head: Head, theta: Tensor, rows: tuple[Tensor, Tensor], vector: Tensor
    ) -> Tensor:
        """H⁻¹ v for the Hessian H of `objective` at ``theta``: exact for small heads,
        else conjugate gradients (stopping early should H turn out not positive there)."""

        def objective(t: Tensor) -> Tensor:
            return self.objective(head, t, rows)

        if theta.numel() <= self.exact_max:
            return torch.linalg.solve(torch.func.hessian(objective)(theta), vector)
        gradient = torch.func.grad(objective)

        def product(v: Tensor) -> Tensor:
            return torch.func.jvp(gradient, (theta,), (v,))[1]

        solution, residual = torch.zeros_like(vector), vector.clone()
        direction, norm = residual.clone(), residual @ residual
        for _ in range(self.cg_iterations):
            curved = product(direction)
            curvature = direction @ curved
            if curvature <= 0:
                break
            step = norm / curvature
            solution += step * direction
            residual -= step * curved
            new_norm = residual @ residual
            if new_norm.sqrt() <= 1e-6 * vector.norm():
                break
            direction = residual + (new_norm / norm) * direction
            norm = new_norm
        return solution


class Head:
    """A victim's head as a function of one flat parameter vector θ."""

    def __init__(self, model: Differentiable) -> None:
        self.module = model.head
        named = list(self.module.named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.initial = flat([p.detach() for _, p in named])

    def logits(self, theta: Tensor, features: Tensor) -> Tensor:
        sizes = [shape.numel() for shape in self.shapes]
        parts = [t.view(shape) for t, shape in zip(theta.split(sizes), self.shapes, strict=True)]
        params = dict(zip(self.names, parts, strict=True))
        return two_class(functional_call(self.module, params, (features,)))

    def loss(self, theta: Tensor, features: Tensor, labels: Tensor, total: bool = False) -> Tensor:
        """Mean (or, with ``total``, summed) cross-entropy of the rows."""
        return cross_entropy(
            self.logits(theta, features), labels, reduction="sum" if total else "mean"
        )
