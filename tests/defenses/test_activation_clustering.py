"""Activation clustering on hand-made activations: which units it clusters and in what space
(as ART: FastICA with its settings only when wider than ``components``), the stratified
silhouette sample, the cluster shares, and per class what it flags, scores and reports."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import FastICA
from sklearn.metrics import silhouette_score

from subpop_runner.defenses.activation_clustering import (
    ActivationClustering,
    relative_sizes,
    stratified_sample,
)
from tests.victims import Penultimate


def two_blobs(n_big: int, n_small: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    big = rng.normal(0, 1, (n_big, width))
    return np.r_[big, rng.normal(0, 1, (n_small, width)) + 6.0]


def test_dead_units_are_dropped_and_a_narrow_unit_still_counts():
    """A constant unit is dropped (it breaks ICA's whitening); a unit whose range is under 1
    is kept: here it alone carries the split."""
    rng = np.random.default_rng(0)
    split = np.r_[np.zeros(20), np.full(20, 0.5)] + rng.normal(0, 0.01, 40)
    a = np.c_[np.full(40, 3.0), split, rng.normal(0, 0.01, 40)]
    cluster, silhouette = ActivationClustering().cluster(a, seed=0)
    assert len(set(cluster[:20])) == 1 and set(cluster[20:]) == {1 - cluster[0]}
    assert silhouette == pytest.approx(silhouette_score(a[:, 1:], cluster))
    one = ActivationClustering().cluster(a[:, :2], seed=0)  # one live unit
    assert one[1] == pytest.approx(silhouette, abs=0.05) and one[1] > 0.9


def test_too_few_rows_or_no_live_unit_is_one_cluster_without_a_silhouette():
    ac = ActivationClustering()
    for a in (np.ones((10, 3)), np.array([[0.0], [1.0], [5.0]])):
        cluster, silhouette = ac.cluster(a, seed=0)
        assert cluster.tolist() == [0] * len(a) and cluster.dtype.kind == "i"
        assert silhouette == 0.0
    cluster, silhouette = ac.cluster(np.array([[0.0], [0.1], [5.0], [5.1]]), seed=0)
    assert cluster[0] == cluster[1] != cluster[2] == cluster[3] and silhouette > 0.9


@pytest.mark.parametrize(("rows", "width", "components"), [(40, 6, 3), (40, 3, 3)])
def test_activations_wider_than_components_are_reduced_by_arts_fastica(rows, width, components):
    a = two_blobs(rows - rows // 4, rows // 4, width, seed=1)
    cluster, silhouette = ActivationClustering(components=components).cluster(a, seed=2)
    reduced = a
    if width > components:
        ica = FastICA(
            min(components, rows - 1),
            random_state=2,
            whiten="unit-variance",
            max_iter=1000,
            tol=0.005,
        )
        reduced = ica.fit_transform(a)
    expected = KMeans(2, n_init=10, random_state=2).fit_predict(reduced)
    np.testing.assert_array_equal(cluster, expected)
    assert silhouette == pytest.approx(silhouette_score(reduced, expected), rel=1e-9)


def test_fewer_rows_than_components_are_reduced_to_one_dimension_less_than_the_rows():
    """n rows whitened in n − 1 dimensions are equidistant: no split is real."""
    cluster, silhouette = ActivationClustering().cluster(two_blobs(6, 2, 12, seed=1), seed=2)
    assert silhouette == pytest.approx(0, abs=1e-6)


def test_the_silhouette_sample_keeps_each_clusters_share_and_at_least_two_of_each():
    cluster = np.r_[np.zeros(90, int), np.ones(7, int), np.full(3, 2)]
    rows = stratified_sample(cluster, 20, seed=0)
    assert np.bincount(cluster[rows]).tolist() == [18, 2, 2]  # 18 = 20·0.9; 1.4 → 2; 0.6 → 2
    assert rows.tolist() == sorted(set(rows.tolist()))  # sorted, no row twice
    assert rows.tolist() == stratified_sample(cluster, 20, seed=0).tolist()
    assert rows.tolist() != stratified_sample(cluster, 20, seed=1).tolist()
    assert stratified_sample(cluster, 100, seed=0).tolist() == list(range(100))
    # 99 of 100: nearly every row of each cluster is drawn, none twice.
    assert stratified_sample(cluster, 99, seed=0).tolist() == sorted(
        set(stratified_sample(cluster, 99, seed=0).tolist())
    )
    assert len(stratified_sample(cluster, 99, seed=0)) == 99
    lone = stratified_sample(np.r_[np.zeros(30, int), 1], 10, seed=0)
    assert np.bincount(np.r_[np.zeros(30, int), 1][lone]).tolist() == [10, 1]


def test_relative_sizes_are_shares_of_the_rows_with_every_cluster_counted():
    assert relative_sizes(np.array([0, 1, 1, 1, 1]), 2).tolist() == [0.2, 0.8]
    assert relative_sizes(np.array([0]), 2).tolist() == [1.0, 0.0]
    assert relative_sizes(np.zeros(0, int), 2).tolist() == [0.0, 0.0]


def planted() -> Penultimate:
    """Victim 0: class 0 is 40 rows and a separated cluster of 8 (its rows 40-47), class 1
    (rows 48-77) one blob; victim 1: the same class 0, and class 1 one row."""
    rng = np.random.default_rng(3)
    class_0 = two_blobs(40, 8, 3, seed=4)
    class_1 = rng.normal(0, 1, (30, 3)) + [0, 20, 0]
    labels = [np.r_[np.zeros(48, int), np.ones(30, int)], np.r_[np.zeros(48, int), 1]]
    return Penultimate(labels, [np.r_[class_0, class_1], np.r_[class_0, [[9.0, 9.0, 9.0]]]])


def test_activation_clustering_removes_a_small_separated_cluster_and_reports_each_class():
    rows = planted()
    ac = ActivationClustering()
    defended = ac(rows, victims="undefended")
    cluster_0, silhouette_0 = ac.cluster(rows.hidden[0][:48], seed=0)
    cluster_1, silhouette_1 = ac.cluster(rows.hidden[0][48:], seed=0)
    sizes_1 = relative_sizes(cluster_1, 2)
    small_1 = int(np.argmin(sizes_1))
    assert sizes_1.min() > 0.35  # one blob split in two: not flagged
    assert np.flatnonzero(~defended.keep[0]).tolist() == list(range(40, 48))
    assert defended.details[0] == {
        0: {"sizes": [0.8333, 0.1667], "silhouette": round(silhouette_0, 4), "removed": 8},
        1: {
            "sizes": sizes_1.round(4).tolist(),
            "silhouette": round(silhouette_1, 4),
            "removed": 0,
        },
    }
    expected = np.r_[np.zeros(40), np.full(8, silhouette_0), (cluster_1 == small_1) * silhouette_1]
    np.testing.assert_allclose(defended.score[0], expected)
    # Victim 1: its class 1 is one row, which stays; the same class 0 goes the same way.
    assert np.flatnonzero(~defended.keep[1]).tolist() == list(range(40, 48))
    assert defended.details[1][1] == {"sizes": [1.0, 0.0], "silhouette": 0.0, "removed": 0}
    assert defended.rounds == [1, 1] and defended.victims == "retrained"
    assert len(rows.trained) == 1 and rows.trained[0][1] is None
    assert [k.tolist() for k in rows.trained[0][0]] == [k.tolist() for k in defended.keep]


def test_a_cluster_is_flagged_only_strictly_below_max_size_and_above_min_silhouette():
    both = planted()
    rows = Penultimate(both.labels[:1], both.hidden[:1])
    _, silhouette = ActivationClustering().cluster(rows.hidden[0][:48], seed=0)
    for settings in ({"max_size": 8 / 48}, {"min_silhouette": silhouette}):
        defended = ActivationClustering(**settings)(rows, victims=None)
        assert defended.keep[0].all() and defended.details[0][0]["removed"] == 0
    defended = ActivationClustering(max_size=8 / 48 + 1e-9)(rows, victims=None)
    assert (~defended.keep[0]).sum() == 8


def test_each_victim_clusters_with_its_own_seed():
    """A silhouette estimated on a 10-row sample depends on the seed; victim v's is the one
    seeded v."""
    blob = two_blobs(50, 10, 3, seed=5)
    labels = [np.zeros(60, int)] * 3
    ac = ActivationClustering(silhouette_sample=10, max_size=0.0)
    defended = ac(Penultimate(labels, [blob] * 3), victims=None)
    silhouettes = [details[0]["silhouette"] for details in defended.details]
    assert silhouettes == [round(ac.cluster(blob, seed=v)[1], 4) for v in range(3)]
    assert len(set(silhouettes)) > 1
