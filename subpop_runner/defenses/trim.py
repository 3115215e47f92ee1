"""TRIM / ILTM (paper Sec. 7.1, Algorithm 4; Jagielski et al. 2018).

Start from every row (the undefended victim: not an oracle start), score each row by its loss
under the current model, keep the ``n − m`` lowest, retrain on the kept rows, and repeat
until the kept set stops changing or ``rounds`` retrains are done. ``m`` is the true poison
count by default, the paper's best case for the defender (the run logs
``defense.oracle_m=true``); ``fraction`` removes that share of each victim's rows instead.

The authors' IMDB notebooks retrain on the full set every round; this implementation
retrains on the kept rows, as Algorithm 4 says.
"""

from __future__ import annotations

import numpy as np

from subpop_runner.defenses.base import Defended, Defense, TrainingRows, keep_lowest
from subpop_runner.errors import ConfigError
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import Victims


class Trim(Defense):
    removes_rows = True

    def __init__(
        self,
        *,
        rounds: int = 5,
        m: int | None = None,
        fraction: float | None = None,
        warm_start: bool = False,
    ):
        self.rounds, self.m, self.fraction = rounds, m, fraction
        self.warm_start = warm_start

    @property
    def oracle_m(self) -> bool:
        """Whether it removes each victim's true poison count (the paper's best case)."""
        return self.m is None and self.fraction is None

    def logged_params(self) -> dict[str, str]:
        return {"defense.oracle_m": str(self.oracle_m).lower()}

    def check(self, n_train: int, regime: Regime) -> None:
        super().check(n_train, regime)
        if self.m is not None and self.m >= n_train:
            raise ConfigError(
                f"defense.m: {self.m} removals of a {n_train}-row training set leave nothing "
                "to train on; valid: an integer < the training set, or null (the poison count)"
            )

    def removals(self, rows: TrainingRows) -> list[int]:
        if self.m is not None:
            return [self.m] * len(rows)
        if self.fraction is not None:
            return [int(self.fraction * len(labels)) for labels in rows.labels]
        return list(rows.removal_budget)

    def defend(self, rows: TrainingRows, victims: Victims) -> Defended:
        removals = self.removals(rows)
        keep = [np.ones(len(labels), bool) for labels in rows.labels]
        scores = list(rows.losses(victims))
        rounds = [0] * len(rows)
        warm = False  # whether ``victims`` came from a warm-started round
        for round_ in range(self.rounds):
            proposed = [keep_lowest(s, m) for s, m in zip(scores, removals, strict=True)]
            changing = [not np.array_equal(a, b) for a, b in zip(proposed, keep, strict=True)]
            if not any(changing):
                break
            keep = proposed
            # Every victim retrains in one batched fit; a round counts for the victims whose
            # kept set changed (the others train on the same rows again).
            final = round_ == self.rounds - 1
            victims = self.retrain(rows, keep, victims, final=final)
            warm = self.warm_start and not final
            rounds = [r + int(c) for r, c in zip(rounds, changing, strict=True)]
            scores = list(rows.losses(victims))
        if warm:  # the kept set stopped changing under warm-started victims: the final fit
            victims = self.retrain(rows, keep, victims)
        return Defended(keep, scores, rounds, victims)
