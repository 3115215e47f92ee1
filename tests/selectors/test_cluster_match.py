import numpy as np
import pytest

from subpop_runner.errors import ConfigError
from subpop_runner.selectors.cluster_match import ClusterMatch


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
        ClusterMatch(k=81).check(blob_splits)


def test_hidden_representation_needs_the_surrogate():
    assert ClusterMatch(representation="hidden").uses_surrogate
    assert not ClusterMatch(representation="input").uses_surrogate
