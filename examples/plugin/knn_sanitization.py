"""k-NN label sanitisation (Paudice, Muñoz-González and Lupu, "Label sanitization against
label flipping poisoning attacks", ECML PKDD 2018 workshops), a subpop_runner defense kept
outside the package: this file and conf/defense/knn_sanitization.yaml are all of it.

For every training row of a victim: its ``k`` nearest other rows of that victim (Euclidean, on
the victims' ``layer`` representation: the input, as in the paper) vote; when the most common
label among them holds a share of at least ``eta`` and is not the row's own, the row takes
that label. The victims are then trained again on the relabelled rows. A row is reported as
not kept when it was relabelled (its original label no longer trains), so the run's
``poison_found`` is the share of poison rows the defense relabelled.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from subpop_runner.defenses.base import Defended, Defense, TrainingRows
from subpop_runner.errors import ConfigError
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import Victims


class KnnSanitization(Defense):
    def __init__(self, *, k: int = 10, eta: float = 0.5, layer: str = "input") -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"defense.k: got {k!r}; valid: an integer >= 1")
        if not 0 < eta <= 1:
            raise ConfigError(f"defense.eta: got {eta!r}; valid: a number in (0, 1]")
        self.k, self.eta, self.layer = k, eta, layer

    def check(self, n_train: int, regime: Regime) -> None:
        if self.layer not in (*regime.layers, "penultimate"):
            raise ConfigError(
                f"defense.layer: this model has no layer {self.layer!r}; valid: "
                + ", ".join(dict.fromkeys([*regime.layers, "penultimate"]))
            )
        if self.k >= n_train:
            raise ConfigError(f"defense.k: {self.k} neighbours of {n_train} rows; valid: < that")

    def defend(self, rows: TrainingRows, victims: Victims) -> Defended:
        keep, shares, labels, details = [], [], [], []
        outputs = rows.outputs(victims, self.layer)
        for own, representation in zip(rows.labels, outputs, strict=True):
            majority, share = neighbours_vote(representation, own, self.k, rows.n_classes)
            relabel = (share >= self.eta) & (majority != own)
            keep.append(~relabel)
            shares.append(np.where(majority != own, share, 0.0))
            labels.append(np.where(relabel, majority, own))
            details.append({"all": {"relabeled": int(relabel.sum())}})
        trained = rows.train(keep, labels=labels)
        return Defended(keep, shares, [1] * len(rows), trained, details)


def neighbours_vote(
    points: np.ndarray, labels: np.ndarray, k: int, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's most common label among its ``k`` nearest other rows, and its share of the
    vote (ties: the lowest label)."""
    points = points.reshape(len(points), -1)
    found = NearestNeighbors(n_neighbors=k + 1).fit(points)
    # k + 1: a row is its own nearest neighbour; an identical copy of it may come first, so
    # drop the row itself where it appears and keep k others.
    index = found.kneighbors(points, return_distance=False)
    others = np.array([[j for j in row if j != i][:k] for i, row in enumerate(index)])
    votes = np.stack([(labels[others] == c).sum(1) for c in range(n_classes)], 1)
    return votes.argmax(1), votes.max(1) / k
