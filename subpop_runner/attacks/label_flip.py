"""Label flipping for a subpopulation (paper Sec. 4.2.1).

``int(alpha * m)`` points are drawn *with replacement* from the subpopulation's aux points
(``m`` of them) and all given one label. The paper picks "the label which maximizes the loss";
the authors' image code uses the least frequent true label among the subpopulation's aux
points, their text code the class with the lowest summed model output. Both are offered:

- ``least_frequent``: the class with the fewest aux points of the subpopulation (ties: lowest
  class index).
- ``max_loss``: the class with the largest summed cross-entropy under the clean model, i.e.
  the lowest summed log-probability over the subpopulation's aux points.
"""

from __future__ import annotations

import numpy as np

from subpop_runner.attacks.base import PoisonSet
from subpop_runner.data.splits import Part
from subpop_runner.selectors.base import Subpopulation


class LabelFlip:
    def __init__(self, *, alpha: float = 1.0, label_rule: str = "least_frequent") -> None:
        self.alpha, self.label_rule = alpha, label_rule

    def budget(self, subpop: Subpopulation) -> int:
        """How many poison points the subpopulation gets (known before any is made)."""
        return poison_count(self.alpha, subpop.sizes["aux"])

    def poison(
        self, subpop: Subpopulation, aux: Part, clean_proba_aux: np.ndarray, seed: int
    ) -> PoisonSet:
        members = np.flatnonzero(subpop.aux)
        count = self.budget(subpop)
        label = flip_label(
            self.label_rule, aux.y[members], clean_proba_aux[members], clean_proba_aux.shape[1]
        )
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


def flip_label(rule: str, labels: np.ndarray, proba: np.ndarray, n_classes: int) -> int:
    if rule == "least_frequent":
        return int(np.argmin(np.bincount(labels, minlength=n_classes)))
    return int(np.argmin(np.log(np.clip(proba, 1e-12, None)).sum(axis=0)))
