"""SEVER (Diakonikolas et al., ICML 2019), on the last layer's per-row gradients.

Each round: every kept row's gradient of the cross-entropy w.r.t. the last layer, in closed
form from what every victim offers, ``(p − onehot(y)) ⊗ [h; 1]`` (``h`` the penultimate
representation); the gradients centred per class; each row scored by its squared projection
on the top right-singular vector of the centred gradient matrix; the top ``p`` (3%) of the
kept rows dropped; the victims retrained on the rest. ``rounds`` (5) rounds, the last retrain
being the final fit.

The gradient matrix ``[n, C·(d+1)]`` is never built: its products with a vector reduce to the
factors (probabilities, representation), so the top singular vector comes from power
iteration at ``O(n·C·d)`` per step (an EfficientNet head: ``n·10·1281``, not a 30k x 12.8k
matrix per victim).

The authors' ``sever()`` has no SVD step and scores the gradient of the probability rather
than of the loss; this is SEVER as published.
"""

from __future__ import annotations

import numpy as np

from subpop_runner.defenses.base import Defended, Defense, TrainingRows, keep_lowest
from subpop_runner.training.victims import PENULTIMATE, PROBA, Victims


class Sever(Defense):
    removes_rows = True

    def __init__(
        self,
        *,
        rounds: int = 5,
        fraction: float = 0.03,
        iterations: int = 50,
        warm_start: bool = False,
    ):
        self.rounds, self.fraction, self.iterations = rounds, fraction, iterations
        self.warm_start = warm_start

    def defend(self, rows: TrainingRows, victims: Victims) -> Defended:
        keep = [np.ones(len(labels), bool) for labels in rows.labels]
        for round_ in range(self.rounds):
            scores = self.scores(rows, victims, keep)
            keep = [
                k & keep_lowest(np.where(k, s, -np.inf), int(self.fraction * k.sum()))
                for k, s in zip(keep, scores, strict=True)
            ]
            victims = self.retrain(rows, keep, victims, final=round_ == self.rounds - 1)
        return Defended(keep, scores, [self.rounds] * len(rows), victims)

    def scores(
        self, rows: TrainingRows, victims: Victims, keep: list[np.ndarray]
    ) -> list[np.ndarray]:
        """Each row's squared projection (0 for rows already dropped)."""
        out = []
        probas = rows.outputs(victims, PROBA)
        outputs = zip(probas, rows.outputs(victims, PENULTIMATE), strict=True)
        for v, (proba, hidden) in enumerate(outputs):
            score = np.zeros(len(keep[v]))
            k = keep[v]
            score[k] = gradient_outlier_scores(
                proba[k], hidden[k], rows.labels[v][k], rows.n_classes, self.iterations, seed=v
            )
            out.append(score)
        return out


def gradient_outlier_scores(
    proba: np.ndarray,
    hidden: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    iterations: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """Squared projections of the class-centred last-layer gradients ``g_i = r_i ⊗ h̃_i``
    (``r = p − onehot(y)``, ``h̃ = [h; 1]``) on their top right-singular vector."""
    r = proba.astype(np.float64) - np.eye(n_classes)[labels]
    h = np.concatenate([hidden.astype(np.float64), np.ones((len(hidden), 1))], 1)
    counts = np.bincount(labels, minlength=n_classes).clip(min=1)
    # Class means of the gradients, each [C, d+1]: mean_k = r_k^T h_k / n_k
    means = np.stack([r[labels == c].T @ h[labels == c] / counts[c] for c in range(n_classes)])

    def project(direction: np.ndarray) -> np.ndarray:  # centred gradients · direction, [n]
        return (r * (h @ direction.T)).sum(1) - (means * direction).sum((1, 2))[labels]

    def back(weights: np.ndarray) -> np.ndarray:  # Σ_i weights_i · centred gradient_i
        per_class = np.bincount(labels, weights=weights, minlength=n_classes)
        return (r * weights[:, None]).T @ h - np.tensordot(per_class, means, 1)

    direction = np.random.default_rng(seed).standard_normal((n_classes, h.shape[1]))
    for _ in range(iterations):
        direction = back(project(direction))
        norm = np.linalg.norm(direction)
        if norm == 0:  # every gradient equals its class mean: nothing stands out
            return np.zeros(len(labels))
        direction /= norm
    return project(direction) ** 2
