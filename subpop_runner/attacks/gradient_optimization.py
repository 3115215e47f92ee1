"""Gradient optimisation, GO (paper Sec. 4.2.2 and App. B).

The paper's idea: one training step on the poisons moves the model by −η ∇θ L(poisons), so
poisons whose gradient lines up with a step that hurts the targets hurt them. GO maximises the
similarity of ∇θ L(poisons) and the gradient of the targets' *adversarial* loss (the targets
labelled with the poisons' label, as Witches' Brew labels its targets): a step on the poisons
then descends that loss, pulling the targets towards the poisons' label.

    objective = similarity( ∇θ L(poisons, y_p), ∇θ L(targets, y_p) )

θ are the last two trained layers of the attacker's model (`subpop_runner.training
.differentiable`), L the mean cross-entropy called as ``cross_entropy(logits, labels)`` (the
authors' Keras call passes y_true and y_pred swapped).

Two choices the paper leaves open, made on measurements (docs/results/attacks_notes.md):
- ``similarity: inner`` (the paper's own objective, ∇θL(targets)ᵀ∇θL(poisons)) by default;
  ``cosine`` (Witches' Brew) is offered. For a logistic head a row's gradient is a multiple of
  its input, so the cosine is largest with the poisons on top of the targets, where label
  flipping already put them: on the 2-D toy of the tests, cosine-GO barely moves them.
- ``target_label: poison`` (the adversarial label, as above) by default; ``true`` ascends the
  targets' true-label loss instead (−∇θ L(targets, y)), which for two classes weighs each
  target by how *wrong* the model already is on it, and on the toy lowers the damage.

Subpopulations are batched: as many as hold ``batch_rows`` poisons together share each pass
through the attacker's model (a backbone's cost is per row, so this is what a GPU needs).
Each of ``steps`` steps is an Adam step of ``lr`` on the relaxed inputs (Witches' Brew
optimises its perturbation with Adam too), then the inputs are put back in the domain
(`subpop_runner.attacks.domain`). The objective is traced per step (step 0: the label-flip
start).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import cosine_similarity, cross_entropy

from subpop_runner.attacks.domain import InputDomain
from subpop_runner.attacks.optimization import Job, OptimizedAttack, flat
from subpop_runner.training.differentiable import Differentiable


class GradientOptimization(OptimizedAttack):
    name = "gradient_optimization"
    label = "GO"

    def __init__(
        self,
        *,
        similarity: str = "inner",
        target_label: str = "poison",
        batch_rows: int = 256,
        **common: object,
    ) -> None:
        """``common``: `OptimizedAttack`'s settings (alpha, label_rule, steps, lr, epsilon)."""
        super().__init__(**common)
        self.similarity, self.target_label = similarity, target_label
        self.batch_rows = batch_rows

    def groups(self, jobs: list[Job]) -> Iterator[list[Job]]:
        """Consecutive subpopulations with at most ``batch_rows`` poisons together (at least
        one): their poisons share every forward and backward pass."""
        group: list[Job] = []
        for job in jobs:
            if group and sum(len(j.poison) for j in group) + len(job.poison) > self.batch_rows:
                yield group
                group = []
            group.append(job)
        if group:
            yield group

    def move(
        self, group: list[Job], model: Differentiable, domain: InputDomain, context: object
    ) -> list[tuple[np.ndarray, dict[str, list]]]:
        """Every subpopulation's objective depends on its own poisons only, and Adam is
        elementwise: one optimiser over the group's poisons moves each set as alone."""
        device = group[0].target_x.device
        wanted = [self.wanted(job, model) for job in group]
        start = torch.from_numpy(np.concatenate([j.poison.x for j in group])).to(device)
        labels = torch.from_numpy(np.concatenate([j.poison.y for j in group])).to(device)
        ends = np.cumsum([len(j.poison) for j in group])
        rows = [slice(e - len(j.poison), e) for j, e in zip(group, ends, strict=True)]
        relaxed = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([relaxed], lr=self.lr)
        traces: list[dict[str, list]] = [{"step": [], "objective": []} for _ in group]
        for step in range(self.steps + 1):
            logits = model.logits(domain.straight_through(relaxed))
            objectives = []
            for own, aim, trace in zip(rows, wanted, traces, strict=True):
                loss = cross_entropy(logits[own], labels[own])
                gradient = torch.autograd.grad(loss, model.parameters, create_graph=True)
                objectives.append(self.similar(flat(gradient), aim))
                trace["step"].append(step)
                trace["objective"].append(float(objectives[-1].detach()))
            if step == self.steps:
                break
            (rise,) = torch.autograd.grad(torch.stack(objectives).sum(), relaxed)
            relaxed.grad = -rise  # Adam descends; the objectives are to rise
            optimizer.step()
            with torch.no_grad():
                relaxed.copy_(domain.clamp(relaxed, start))
        moved = domain.project(relaxed).cpu().numpy().astype(group[0].poison.x.dtype)
        return [(moved[own], trace) for own, trace in zip(rows, traces, strict=True)]

    def wanted(self, job: Job, model: Differentiable) -> Tensor:
        """The gradient the poisons' gradient should resemble (see the module docstring)."""
        if self.target_label == "poison":
            adversarial = torch.full_like(job.target_y, int(job.poison.y[0]))
            return flat(self.gradient(model, job.target_x, adversarial))
        return -flat(self.gradient(model, job.target_x, job.target_y))

    def similar(self, a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum() if self.similarity == "inner" else cosine_similarity(a, b, dim=0)

    @staticmethod
    def gradient(
        model: Differentiable, x: Tensor, y: Tensor, create_graph: bool = False
    ) -> tuple[Tensor, ...]:
        """∇θ of the mean cross-entropy of (x, y) over the attacked parameters."""
        loss = cross_entropy(model.logits(x), y)
        return torch.autograd.grad(loss, model.parameters, create_graph=create_graph)
