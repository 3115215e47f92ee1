"""Gradient optimisation, GO (paper Sec. 4.2.2 and App. B), in the Witches' Brew form.

The paper's idea: one training step on the poisons moves the model by −η ∇θ L(poisons); the
targets' loss rises most when that step points along +∇θ L(targets), i.e. when ∇θ L(poisons)
points along −∇θ L(targets). GO maximises

    cos( ∇θ L(poisons), −∇θ L(targets) )

over the poisons' inputs (Witches' Brew's gradient matching; the cosine, not the paper's dot
product, so the poisons cannot win by growing their gradient). θ are the last two trained
layers of the attacker's model (`subpop_runner.training.differentiable`), L the mean
cross-entropy, called as ``cross_entropy(logits, labels)``: the authors' Keras call passes
(y_pred, y_true) swapped. The paper writes the objective with the opposite sign (maximising
the alignment of the two gradients, which makes a step on the poisons *lower* the targets'
loss); the sign here is the one its own derivation asks for, and a test breaks on the other.

Each of ``steps`` steps is an Adam step of ``lr`` on the relaxed inputs (Witches' Brew
optimises its perturbation with Adam too), then the inputs are put back in the domain
(`subpop_runner.attacks.domain`). The objective is traced per step (step 0: the label-flip
start).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import cross_entropy

from subpop_runner.attacks.base import PoisonSet
from subpop_runner.attacks.domain import InputDomain
from subpop_runner.attacks.optimization import OptimizedAttack, flat
from subpop_runner.training.differentiable import Differentiable


class GradientOptimization(OptimizedAttack):
    name = "gradient_optimization"

    def move(
        self,
        poison: PoisonSet,
        targets: tuple[Tensor, Tensor],
        members: np.ndarray,
        model: Differentiable,
        domain: InputDomain,
        context: object,
    ) -> tuple[np.ndarray, dict[str, list]]:
        target_x, target_y = targets
        target_loss = cross_entropy(model.logits(target_x), target_y)
        ascent = -flat(torch.autograd.grad(target_loss, model.parameters))
        start = torch.from_numpy(poison.x).to(target_x.device)
        labels = torch.from_numpy(poison.y).to(target_x.device)
        relaxed = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([relaxed], lr=self.lr)
        trace: dict[str, list] = {"step": [], "objective": []}
        for step in range(self.steps + 1):
            x = domain.straight_through(relaxed)
            loss = cross_entropy(model.logits(x), labels)
            gradient = flat(torch.autograd.grad(loss, model.parameters, create_graph=True))
            objective = torch.nn.functional.cosine_similarity(gradient, ascent, dim=0)
            trace["step"].append(step)
            trace["objective"].append(float(objective.detach()))
            if step == self.steps:
                break
            (rise,) = torch.autograd.grad(objective, relaxed)
            relaxed.grad = -rise  # Adam descends; the objective is to rise
            optimizer.step()
            with torch.no_grad():
                relaxed.copy_(domain.clamp(relaxed, start))
        return domain.project(relaxed).cpu().numpy().astype(poison.x.dtype), trace
