"""What every attack is to the runner (what ``conf/attack/<name>.yaml``'s ``_target_`` builds;
paper Sec. 4): step 3 of the experiment, from what the attacker has (`pipeline.poison` passes
D_aux only, and a model trained on it).

An attack gives each subpopulation a budget and label-flip poison points, then may move them
(`optimize`); label flipping is the attack whose optimisation step leaves them as they are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from subpop_runner.attacks.domain import InputDomain
    from subpop_runner.training.regime import Regime
    from subpop_runner.training.victims import Victims
    from subpop_runner.types import Part, PoisonSet, Splits, Subpopulation


@dataclass
class Optimized:
    """The poison sets an attack ends with, and per subpopulation and step its objective
    (``subpop_id``, ``step``, ``objective``; no rows for an attack that does not optimise)."""

    poison_sets: list[PoisonSet]
    trace: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["subpop_id", "step", "objective"])
    )


class Attack(ABC):
    """An attack on subpopulations.

    Abilities (declared here with their defaults; an attack states the ones it has):

    - ``uses_model``: it reads the attacker's model, the victim's family trained on D_aux
      alone (the pipeline trains it only then);
    - ``epsilon``: how far (L∞, images) `optimize` may move a point; None where it moves none;
    - ``label``: its short name in the report's tables (the paper's LF, GO, INF); empty: the
      name of its config option;
    - `check`: refuses, before any run, data or a model family it cannot attack;
    - `optimize`: moves the label-flip points; by default leaves them as they are.
    """

    uses_model: bool = False
    epsilon: float | None = None
    label: str = ""

    @abstractmethod
    def budget(self, subpop: Subpopulation) -> int:
        """How many poison points the subpopulation gets (known before any is made)."""

    @abstractmethod
    def poison(
        self,
        subpop: Subpopulation,
        aux: Part,
        n_classes: int,
        seed: int,
        attacker_proba: np.ndarray | None = None,
    ) -> PoisonSet:
        """The subpopulation's label-flip points, drawn from its aux members;
        ``attacker_proba``: the attacker's model on every aux row, where `uses_model`."""

    def check(self, splits: Splits, regime: Regime) -> None:  # noqa: B027 (most accept all)
        """`ConfigError` unless this attack can run on these data and this model family."""

    def optimize(
        self,
        poison_sets: Sequence[PoisonSet],
        subpops: Sequence[Subpopulation],
        attacker: Victims | None,
        aux: Part,
        domain: InputDomain,
    ) -> Optimized:
        """The poison sets moved against the attacker's model, inside ``domain``, with the
        trace of the objective; here, unmoved."""
        return Optimized(list(poison_sets))
