"""No defense (``defense=none``, the default): every victim trains on every row of train ∪
its poison set. A defense like the others, so that a run has one path whatever defends it; it
keeps every row, trains nothing and measures nothing besides the undefended victims."""

from __future__ import annotations

import numpy as np

from subpop_runner.defenses.base import Defended, Defense, TrainingRows
from subpop_runner.training.victims import Victims


class NoDefense(Defense):
    def defend(self, rows: TrainingRows, victims: Victims) -> Defended:
        return Defended(
            [np.ones(len(labels), bool) for labels in rows.labels],
            [np.zeros(len(labels)) for labels in rows.labels],
            [0] * len(rows),
            victims,
            changed=False,
        )
