"""Activation clustering (Chen et al., 2018).

Per victim and class: the penultimate activations of the class's rows, reduced by FastICA to
``components`` (10) dimensions when they have more, split by 2-means. A cluster is removed
only when it is small (relative size below ``max_size``, 0.35) AND the split is real
(silhouette above ``min_silhouette``, 0.1); a class whose clustering is not flagged keeps every
row (removing the smaller cluster regardless is how an analysis removed 25.7% of UTKFace).
The victims then retrain once. Each victim's ``details`` say, per class, the cluster sizes,
the silhouette and what was removed.

As in ART (the reference implementation), activations of no more than ``components`` units
(the Adult MLP's 10 hidden units) are clustered as they are, and FastICA runs with ART's
``max_iter=1000, tol=0.005``: a 10-to-10 "reduction" would only rotate and whiten them.

The silhouette is computed on at most ``silhouette_sample`` rows of the class (a seeded
sample, stratified by cluster so that a small cluster is never missed): its cost is
quadratic in the rows.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import FastICA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import silhouette_score

from subpop_runner.defenses.base import Defended, Defense, TrainingRows, per_class
from subpop_runner.training.victims import PENULTIMATE, Victims


class ActivationClustering(Defense):
    removes_rows = True

    def __init__(
        self,
        *,
        components: int = 10,
        max_size: float = 0.35,
        min_silhouette: float = 0.1,
        silhouette_sample: int = 2000,
    ):
        self.components, self.max_size = components, max_size
        self.min_silhouette, self.silhouette_sample = min_silhouette, silhouette_sample

    def defend(self, rows: TrainingRows, victims: Victims) -> Defended:
        keep, scores, details = [], [], []
        outputs = rows.outputs(victims, PENULTIMATE)
        for v, (labels, hidden) in enumerate(zip(rows.labels, outputs, strict=True)):
            kept, score, report = np.ones(len(labels), bool), np.zeros(len(labels)), {}
            for members in per_class(labels, kept, rows.n_classes):
                cluster, silhouette = self.cluster(hidden[members], seed=v)
                sizes = relative_sizes(cluster, 2)
                small = int(np.argmin(sizes))
                flagged = sizes[small] < self.max_size and silhouette > self.min_silhouette
                if flagged:
                    kept[members[cluster == small]] = False
                score[members] = np.where(cluster == small, silhouette, 0.0)
                report[int(labels[members[0]])] = {
                    "sizes": sizes.round(4).tolist(),
                    "silhouette": round(float(silhouette), 4),
                    "removed": int((cluster == small).sum()) if flagged else 0,
                }
            keep.append(kept)
            scores.append(score)
            details.append(report)
        return Defended(keep, scores, [1] * len(rows), self.retrain(rows, keep, victims), details)

    def cluster(self, activations: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
        """2-means labels of the activations (ICA-reduced when wider than ``components``), and
        the split's silhouette in that space (0 when there is nothing to split)."""
        # Units constant over the class (dead ReLUs) carry nothing and break ICA's whitening.
        activations = activations[:, np.ptp(activations, 0) > 1e-8]
        if len(activations) < 4 or activations.shape[1] == 0:
            return np.zeros(len(activations), int), 0.0
        reduced = activations.astype(np.float64)
        if activations.shape[1] > self.components:
            n_components = min(self.components, len(activations) - 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                ica = FastICA(
                    n_components,
                    random_state=seed,
                    whiten="unit-variance",
                    max_iter=1000,
                    tol=0.005,
                )
                reduced = ica.fit_transform(reduced)
        cluster = KMeans(2, n_init=10, random_state=seed).fit_predict(reduced)
        if len(np.unique(cluster)) < 2:
            return cluster, 0.0
        rows = stratified_sample(cluster, self.silhouette_sample, seed)
        return cluster, float(silhouette_score(reduced[rows], cluster[rows]))


def stratified_sample(cluster: np.ndarray, size: int, seed: int) -> np.ndarray:
    """At most ``size`` rows, each cluster in proportion and at least 2 of each (a plain
    sample can miss a small cluster, and a silhouette needs both)."""
    if len(cluster) <= size:
        return np.arange(len(cluster))
    rng = np.random.default_rng(seed)
    parts = []
    for c in np.unique(cluster):
        members = np.flatnonzero(cluster == c)
        take = min(len(members), max(2, round(size * len(members) / len(cluster))))
        parts.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(parts))


def relative_sizes(cluster: np.ndarray, n_clusters: int) -> np.ndarray:
    """Each cluster's share of the rows (ART's ``analyze_by_size``)."""
    return np.bincount(cluster, minlength=n_clusters) / max(1, len(cluster))
