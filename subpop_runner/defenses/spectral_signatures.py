"""Spectral signatures (Tran et al., NeurIPS 2018).

Per victim and class: the penultimate representations of the class's rows, centred on their
mean; each row's score is ``|(r − μ)·v|`` with ``v`` the top right-singular vector of the
centred matrix; the ``1.5·ε`` highest-scoring rows of each class go (ε = 0.1: 15%, as the
authors did), and the victims retrain once. ``centered: false`` takes the singular vector and
scores of the raw representations, as ART and BackdoorBench do.
"""

from __future__ import annotations

import numpy as np

from subpop_runner.defenses.base import (
    Defended,
    Defense,
    TrainingRows,
    keep_lowest,
    per_class,
)
from subpop_runner.training.victims import PENULTIMATE, Victims


class SpectralSignatures(Defense):
    removes_rows = True

    def __init__(self, *, epsilon: float = 0.1, centered: bool = True):
        self.epsilon, self.centered = epsilon, centered

    def defend(self, rows: TrainingRows, victims: Victims) -> Defended:
        keep, scores = [], []
        for labels, hidden in zip(rows.labels, rows.outputs(victims, PENULTIMATE), strict=True):
            score = np.zeros(len(labels))
            kept = np.ones(len(labels), bool)
            for members in per_class(labels, kept, rows.n_classes):
                score[members] = spectral_scores(hidden[members], self.centered)
                drop = int(1.5 * self.epsilon * len(members))
                kept[members] = keep_lowest(score[members], drop)
            keep.append(kept)
            scores.append(score)
        return Defended(keep, scores, [1] * len(rows), self.retrain(rows, keep, victims))


def spectral_scores(representations: np.ndarray, centered: bool = True) -> np.ndarray:
    """``|(r − μ)·v|`` per row (``|r·v|`` uncentred), ``v`` the top right-singular vector."""
    r = representations.astype(np.float64)
    if centered:
        r = r - r.mean(0)
    if len(r) < 2 or not r.any():
        return np.zeros(len(r))
    _, _, vh = np.linalg.svd(r, full_matrices=False)
    return np.abs(r @ vh[0])
