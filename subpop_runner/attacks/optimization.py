"""What the two optimisation attacks share (paper Sec. 4.2.2): they start from the label-flip
poison set and move its points' inputs on the *attacker's* model, one trained on D_aux only
(never on the victim's training rows; the authors' code took its targets from the victim's
training subpopulation, outside the paper's threat model). The targets are the
subpopulation's aux points with their true labels.

Both need a victim family that is a torch function of its inputs (`Victims.differentiable`);
text (token ids) is not continuous and is refused, as in the paper.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from subpop_runner.attacks.base import Optimized
from subpop_runner.attacks.domain import InputDomain
from subpop_runner.attacks.label_flip import LabelFlip
from subpop_runner.errors import ConfigError
from subpop_runner.training.differentiable import Differentiable
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import Victims
from subpop_runner.types import Part, PoisonSet, Splits, Subpopulation


class OptimizedAttack(LabelFlip):
    """Label flipping, then ``steps`` steps of the subclass's update on every poison set."""

    name = ""  # the config's name, for messages
    uses_model = True

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        label_rule: str = "least_frequent",
        steps: int = 50,
        lr: float = 0.2,
        epsilon: float = 1 / 510,
    ) -> None:
        super().__init__(alpha=alpha, label_rule=label_rule)
        self.steps, self.lr, self.epsilon = steps, lr, epsilon

    def check(self, splits: Splits, regime: Regime) -> None:
        """`ConfigError` unless these data can be moved continuously and the model gives
        gradients w.r.t. its inputs."""
        if splits.vocabulary is not None:
            raise ConfigError(
                f"attack={self.name}: text is not supported (token ids cannot move "
                "continuously; the paper optimises images only); use attack=label_flip"
            )
        if not regime.gradients:
            raise ConfigError(
                f"attack={self.name}: this model offers no gradients w.r.t. its inputs "
                f"({type(regime).__name__}); use a torch model (model=mlp for scikit-learn's "
                "MLP, the same network) or attack=label_flip"
            )

    def optimize(
        self,
        poison_sets: Sequence[PoisonSet],
        subpops: Sequence[Subpopulation],
        attacker: Victims,
        aux: Part,
        domain: InputDomain,
    ) -> Optimized:
        """Move every label-flip poison set against the attacker's model (victim 0 of
        ``attacker``), its subpopulation's aux points the targets; `groups` of them at once."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = attacker.differentiable(0).to(device)
        context = self.prepare(attacker, aux, device)
        jobs = [
            Job(
                poison,
                subpop.aux,
                torch.from_numpy(aux.x[subpop.aux]).to(device),
                torch.from_numpy(aux.y[subpop.aux]).to(device),
            )
            for poison, subpop in zip(poison_sets, subpops, strict=True)
            if len(poison)
        ]
        moved = {}
        traces = []
        with tqdm(total=len(jobs), desc=self.name, unit="subpop", leave=False) as bar:
            for group in self.groups(jobs):
                for job, (x, trace) in zip(
                    group, self.move(group, model, domain, context), strict=True
                ):
                    p = job.poison
                    moved[p.subpop_id] = PoisonSet(p.subpop_id, x, p.y, p.source_index)
                    traces.append(pd.DataFrame({"subpop_id": p.subpop_id, **trace}))
                bar.update(len(group))
        columns = ["subpop_id", "step", "objective"]
        trace = pd.concat(traces, ignore_index=True) if traces else pd.DataFrame(columns=columns)
        return Optimized([moved.get(p.subpop_id, p) for p in poison_sets], trace)

    def groups(self, jobs: list[Job]) -> Iterator[list[Job]]:
        """One subpopulation at a time (an attack that batches them says otherwise)."""
        for job in jobs:
            yield [job]

    def prepare(self, attacker: Victims, aux: Part, device: torch.device) -> object:
        """What every subpopulation's `move` shares beyond the model (None here)."""
        return None

    @abstractmethod
    def move(
        self, group: list[Job], model: Differentiable, domain: InputDomain, context: object
    ) -> list[tuple[np.ndarray, dict[str, list]]]:
        """Per job of the group, the poison set's moved inputs (in the domain) and its trace:
        ``step`` and ``objective`` lists (and any more columns)."""


@dataclass
class Job:
    """One subpopulation to attack: its label-flip poisons, its aux members, the targets."""

    poison: PoisonSet
    members: np.ndarray
    target_x: Tensor
    target_y: Tensor


def flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])
