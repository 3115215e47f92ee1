"""Label flipping for a subpopulation (paper Sec. 4.2.1).

``int(alpha * m)`` points are drawn *with replacement* from the subpopulation's aux points
(``m`` of them) and all given one label. The paper picks "the label which maximizes the loss";
the authors' image code uses the least frequent true label among the subpopulation's aux
points, their text code the class with the lowest summed model output. Both are offered:

- ``least_frequent``: the class with the fewest aux points of the subpopulation (ties: lowest
  class index).
- ``max_loss``: the class with the largest summed cross-entropy under the attacker's model
  (the victim's family trained on D_aux alone: the attacker has no other data), i.e. the
  lowest summed log-probability over the subpopulation's aux points.
"""

from __future__ import annotations

import numpy as np

from subpop_runner.attacks.base import Attack
from subpop_runner.types import Part, PoisonSet, Subpopulation


class LabelFlip(Attack):
    """Label flipping; it reads the attacker's model only for ``label_rule=max_loss``."""

    label = "LF"

    def __init__(self, *, alpha: float = 1.0, label_rule: str = "least_frequent") -> None:
        self.alpha, self.label_rule = alpha, label_rule

    @property
    def uses_model(self) -> bool:
        return self.label_rule == "max_loss"

    def budget(self, subpop: Subpopulation) -> int:
        """How many poison points the subpopulation gets (known before any is made)."""
        return poison_count(self.alpha, subpop.sizes["aux"])

    def poison(
        self,
        subpop: Subpopulation,
        aux: Part,
        n_classes: int,
        seed: int,
        attacker_proba: np.ndarray | None = None,
    ) -> PoisonSet:
        """``attacker_proba``: the attacker's model's probabilities on every aux row, where
        `uses_model`."""
        members = np.flatnonzero(subpop.aux)
        count = self.budget(subpop)
        proba = None if attacker_proba is None else attacker_proba[members]
        label = flip_label(self.label_rule, aux.y[members], n_classes, proba)
        rng = np.random.default_rng([seed, subpop.id])
        drawn = rng.choice(members, size=count, replace=True)
        return PoisonSet(
            subpop_id=subpop.id,
            x=aux.x[drawn],
            y=np.full(count, label, dtype=np.int64),
            source_index=drawn,
        )


def poison_count(alpha: float, subpop_aux_size: int) -> int:
    """The paper's budget: alpha relative to the subpopulation's aux size."""
    return int(alpha * subpop_aux_size)


def flip_label(
    rule: str, labels: np.ndarray, n_classes: int, proba: np.ndarray | None = None
) -> int:
    """The one label of a subpopulation's poison points, from its aux members' true
    ``labels`` and, for ``max_loss``, the attacker's model's probabilities on them."""
    if rule == "least_frequent":
        return int(np.argmin(np.bincount(labels, minlength=n_classes)))
    return int(np.argmin(np.log(np.clip(proba, 1e-12, None)).sum(axis=0)))
