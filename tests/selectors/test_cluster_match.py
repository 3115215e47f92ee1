import logging

import numpy as np
import pytest
import torch
from torch import nn

from subpop_runner.errors import ConfigError
from subpop_runner.identity import STAGE_GROUPS
from subpop_runner.selectors.cluster_match import ClusterMatch
from subpop_runner.types import Splits

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


def test_k_up_to_the_aux_size_is_accepted(blob_splits):
    ClusterMatch(k=80).check(blob_splits, ("hidden",))


def test_a_layer_the_model_does_not_have_names_the_valid_ones(blob_splits):
    with pytest.raises(ConfigError, match="the model has no layer 'pool9'; valid: input, hidden"):
        ClusterMatch(k=2, representation="pool9").check(blob_splits, ("input", "hidden"))


def test_the_input_needs_no_layer_of_the_model(blob_splits):
    ClusterMatch(k=2, representation="input").check(blob_splits, ("hidden",))


class Embedding(nn.Module):
    """A pretrained network's stand-in: layer "pooled" is a fixed linear map of the input,
    "doubled" twice it, both behind a dropout that only inference mode switches off."""

    layers = ("input", "pooled", "doubled")

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.dropout, self.linear = nn.Dropout(0.5), nn.Linear(2, 3)

    def representation(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        pooled = self.linear(self.dropout(x))
        return pooled if layer == "pooled" else 2 * pooled


def test_an_embedding_is_checked_against_its_own_layers(blob_splits):
    on_pooled = ClusterMatch(k=4, representation="pooled", embedding=Embedding())
    on_pooled.check(blob_splits, ("hidden",))
    with pytest.raises(ConfigError, match="selector.embedding has no layer 'hidden'; valid: in"):
        ClusterMatch(k=4, embedding=Embedding()).check(blob_splits, ("input", "hidden"))


def recording_memo(calls: list):
    """A stage cache in a dict: ``calls`` gets each (stage, parts) that had to be computed."""
    store = {}

    def memo(stage, parts, compute, mapped=False):
        key = (stage, repr(parts))
        if key not in store:
            calls.append((stage, parts))
            store[key] = compute()
        return store[key]

    return memo


def test_embedding_features_are_the_layer_in_inference_mode_over_every_row():
    """300 rows: more than one batch of the network's. Each layer is a stage of its own."""
    rng = np.random.default_rng(0)
    part = blob_part(rng, np.array([[0, 0], [5, 5]], np.float32), 150)
    splits = Splits(part, part, part, ("a", "b"))
    network, calls = Embedding(), []
    memo = recording_memo(calls)
    for layer in ("pooled", "doubled"):
        selector = ClusterMatch(representation=layer, embedding=network)
        features = selector.features(splits, surrogate=None, memo=memo)
        with torch.no_grad():
            expected = network.eval().representation(torch.from_numpy(part.x), layer).numpy()
        for name in ("aux", "train", "test"):
            np.testing.assert_allclose(features[name], expected, rtol=1e-6)
    assert [stage for stage, _ in calls] == ["embedding", "embedding"]
    assert {stage for stage, _ in calls} <= set(STAGE_GROUPS)  # stages the pipeline keys


def test_a_layer_of_the_surrogate_is_asked_of_the_surrogate(blob_splits):
    asked = []
    ClusterMatch(representation="hidden").features(blob_splits, surrogate=asked.append)
    assert asked == ["hidden"]


def test_selecting_caches_the_clustering_in_the_stage_cache_it_is_given(blob_splits):
    calls, selector = [], ClusterMatch(k=4, representation="input", pca_components=2)
    proba = np.full((len(blob_splits.aux), 2), 0.5)
    memo = recording_memo(calls)
    for _ in range(2):
        selector.select(blob_splits, proba, inputs(blob_splits), memo)
    assert [stage for stage, _ in calls] == ["clustering"]


def test_a_clustering_is_reused_only_by_the_same_settings(blob_splits):
    """One stage cache shared by a sweep: any setting that changes the clusters is part of the
    key, so a k=3 job never gets a k=4 job's clusters, and the same settings compute once."""
    calls = []
    memo = recording_memo(calls)
    features = inputs(blob_splits)
    base = {"k": 4, "representation": "input", "pca_components": 2, "random_state": 0}
    variants = [
        {},
        {"k": 3},
        {"pca_components": 1},
        {"cluster_components": 1},
        {"random_state": 1},
        {"representation": "hidden"},
        {},
    ]
    for change in variants:
        found = ClusterMatch(**base | change).candidates(blob_splits, features, memo)
        assert len(found) == change.get("k", 4)
    assert len(calls) == len(variants) - 1
    assert {stage for stage, _ in calls} <= set(STAGE_GROUPS)


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


def zigzag(rng, per_blob: int = 20):
    """Blobs at x = 0, 5, 10, 15 with y alternating 0 and 2: the first principal component is
    nearly x, the second y. Annotation = blob index."""
    return blob_part(rng, np.array([[0, 0], [5, 2], [10, 0], [15, 2]], np.float32), per_blob)


@pytest.mark.parametrize(
    ("pca_components", "cluster_components", "blob"),
    [(1, None, "g1"), (2, 1, "g1"), (2, None, "g0")],
)
def test_points_join_the_cluster_nearest_in_the_components_kept(
    pca_components, cluster_components, blob
):
    """A test point at (4, -8): along the first component it lies by blob g1 (x = 5), in the
    plane it is nearest g0 (0, 0). PCA to 1 dim, or KMeans on the first of 2, puts it in g1."""
    rng = np.random.default_rng(0)
    aux = zigzag(rng)
    test = blob_part(rng, np.array([[4, -8]], np.float32), 1)
    splits = Splits(aux, aux, test, ("a", "b"))
    selector = ClusterMatch(
        k=4,
        representation="input",
        pca_components=pca_components,
        cluster_components=cluster_components,
    )
    found = selector.candidates(splits, inputs(splits))
    (joined,) = [s for s in found if s.test.any()]
    assert set(aux.annotations.loc[joined.aux, "group"]) == {blob}


def test_pca_wider_than_the_representation_keeps_all_of_it_and_says_so(blob_splits, caplog):
    with caplog.at_level(logging.WARNING, logger="subpop_runner.selectors.cluster_match"):
        found = ClusterMatch(k=4, representation="input", pca_components=10).candidates(
            blob_splits, inputs(blob_splits)
        )
    assert [s.sizes["aux"] for s in found] == [20] * 4  # still one blob per cluster
    assert caplog.messages == ["PCA to 10 dims asked; representation has 2, keeping all"]
