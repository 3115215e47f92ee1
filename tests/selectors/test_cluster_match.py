import numpy as np
import pytest

from subpop_runner.data.splits import Splits
from subpop_runner.errors import ConfigError
from subpop_runner.selectors.cluster_match import ClusterMatch

from ..conftest import blob_part


def inputs(splits):
    return {part: getattr(splits, part).x for part in ("aux", "train", "test")}


def test_test_points_join_the_cluster_of_their_blob(blob_splits):
    found = ClusterMatch(k=4, representation="input", pca_components=2).candidates(
        blob_splits, inputs(blob_splits)
    )
    assert len(found) == 4
    for subpop in found:
        blobs = set(blob_splits.aux.annotations.loc[subpop.aux, "group"])
        assert len(blobs) == 1  # one blob per cluster
        assert set(blob_splits.test.annotations.loc[subpop.test, "group"]) == blobs
        assert subpop.sizes == {"aux": 20, "train": 20, "test": 20}
        assert next(iter(blobs)) in subpop.description


def test_same_random_state_same_clusters(blob_splits):
    first, again = (
        ClusterMatch(k=3, representation="input", pca_components=2, random_state=7).candidates(
            blob_splits, inputs(blob_splits)
        )
        for _ in range(2)
    )
    assert all(np.array_equal(a.test, b.test) for a, b in zip(first, again, strict=True))


def test_k_larger_than_aux_names_the_limit(blob_splits):
    with pytest.raises(ConfigError, match="choose selector.k <= 80"):
        ClusterMatch(k=81).check(blob_splits, ("hidden",))


def test_a_layer_the_model_does_not_have_names_the_valid_ones(blob_splits):
    with pytest.raises(ConfigError, match="no layer 'pool9'; valid: input, hidden"):
        ClusterMatch(k=2, representation="pool9").check(blob_splits, ("input", "hidden"))


def test_hidden_representation_needs_the_surrogate():
    assert ClusterMatch(representation="hidden").uses_surrogate
    assert not ClusterMatch(representation="input").uses_surrogate


def line_of_blobs(rng, axis: int, per_blob: int = 20):
    """Four blobs 5 apart along ``axis`` (0: x, 1: y); annotation = blob index."""
    centers = np.zeros((4, 2), np.float32)
    centers[:, axis] = [0, 5, 10, 15]
    return blob_part(rng, centers, per_blob)


def test_pca_and_kmeans_are_fitted_on_aux_only():
    """Aux spreads along x, train and test along y: a PCA(1) or KMeans fitted on anything but
    aux would cut aux into other clusters."""
    rng = np.random.default_rng(1)
    aux, train, test = line_of_blobs(rng, 0), line_of_blobs(rng, 1), line_of_blobs(rng, 1)
    splits = Splits(train, aux, test, ("a", "b"))
    found = ClusterMatch(k=4, representation="input", pca_components=1).candidates(
        splits, inputs(splits)
    )
    for subpop in found:
        assert subpop.sizes["aux"] == 20
        assert aux.annotations.loc[subpop.aux, "group"].nunique() == 1
    # projected on aux's axis, every train and test point lies at x = 0: the cluster of g0
    (g0,) = [s for s in found if aux.annotations.loc[s.aux, "group"].iloc[0] == "g0"]
    assert g0.train.all() and g0.test.all()
