"""ClusterMatch (paper Alg. 2): subpopulations are KMeans clusters of a representation.

A surrogate model is trained on the aux set; its chosen layer (``representation``: any
layer the model names, e.g. the MLP's ``hidden``, Conv's ``pool0``..``pool2`` or
``penultimate``; the paper's Table 3 finds later layers attack better; ``input`` needs no
surrogate) is projected by PCA and clustered by KMeans, both fitted on aux only. A point of
train or test belongs to the cluster whose centre is closest to its projection.

PCA: the paper's text projects to 10 dimensions (``pca_components=10``); the authors' image
code projects to 100 and runs KMeans on the first 40 (``pca_components=100
cluster_components=40``). Both are reachable by config; the text's is the default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from subpop_runner.errors import ConfigError
from subpop_runner.selectors.base import Features, Memo, Selector, describe, no_memo
from subpop_runner.types import PARTS, Splits, Subpopulation

if TYPE_CHECKING:
    from subpop_runner.models.network import Network

log = logging.getLogger(__name__)


class ClusterMatch(Selector):
    def __init__(
        self,
        *,
        k: int = 100,
        representation: str = "hidden",
        pca_components: int | None = 10,
        cluster_components: int | None = None,
        random_state: int = 0,
        embedding: Network | None = None,
        take: Sequence[str] = ("all",),
        n: int | None = None,
    ) -> None:
        super().__init__(take=take, n=n)
        self.k, self.representation = k, representation
        self.pca_components, self.random_state = pca_components, random_state
        self.cluster_components, self.embedding = cluster_components, embedding
        self.uses_surrogate = representation != "input" and embedding is None

    def check(self, splits: Splits, layers: Sequence[str]) -> None:
        owner, layers = (
            ("the model", layers)
            if self.embedding is None
            else ("selector.embedding", self.embedding.layers)
        )
        if self.representation != "input" and self.representation not in layers:
            raise ConfigError(
                f"selector.representation: {owner} has no layer {self.representation!r}; "
                f"valid: {', '.join(dict.fromkeys(['input', *layers]))}"
            )
        if self.k > len(splits.aux):
            raise ConfigError(
                f"selector.k: {self.k} is larger than the aux set ({len(splits.aux)} points); "
                f"choose selector.k <= {len(splits.aux)}"
            )

    def features(
        self, splits: Splits, surrogate: Callable[[str], Features], memo: Memo = no_memo
    ) -> Features:
        """The input, a layer of the surrogate trained on aux, or (``embedding``, paper Sec.
        5.5) a layer of another pretrained network: clusters built on one architecture's
        representation, attacking another."""
        if self.representation == "input":
            return super().features(splits, surrogate, memo)
        if self.embedding is None:
            return surrogate(self.representation)
        return memo(
            "embedding",
            {"layer": self.representation},
            lambda: {
                p: embed(self.embedding, getattr(splits, p).x, self.representation) for p in PARTS
            },
        )

    def cluster(self, features: Features) -> dict[str, np.ndarray]:
        """Cluster index of every point: PCA and KMeans fitted on aux, applied to all parts."""
        aux = features["aux"]
        components = self.pca_components
        if components is not None and components > min(aux.shape):
            log.warning(
                "PCA to %d dims asked; representation has %d, keeping all",
                components,
                aux.shape[1],
            )
            components = min(aux.shape)
        pca = PCA(n_components=components, random_state=self.random_state).fit(aux)
        kept = slice(None, self.cluster_components)  # KMeans on the leading components

        def project(x: np.ndarray) -> np.ndarray:
            return pca.transform(x)[:, kept]

        kmeans = KMeans(n_clusters=self.k, n_init="auto", random_state=self.random_state)
        kmeans.fit(project(aux))
        return {part: kmeans.predict(project(features[part])) for part in PARTS}

    def candidates(
        self, splits: Splits, features: Features, memo: Memo = no_memo
    ) -> list[Subpopulation]:
        settings = {
            "k": self.k,
            "representation": self.representation,
            "pca_components": self.pca_components,
            "cluster_components": self.cluster_components,
            "random_state": self.random_state,
        }
        labels = memo("clustering", {"clustering": settings}, lambda: self.cluster(features))
        return [
            Subpopulation(
                id=cluster,
                description=f"cluster {cluster}: "
                + describe(splits.aux.annotations, labels["aux"] == cluster),
                aux=labels["aux"] == cluster,
                train=labels["train"] == cluster,
                test=labels["test"] == cluster,
            )
            for cluster in range(self.k)
        ]


def embed(network: Network, x: np.ndarray, layer: str, batch_size: int = 256) -> np.ndarray:
    """``network``'s activations at ``layer`` for ``x``, in inference mode, on a GPU where
    there is one."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network = network.eval().to(device)
    with torch.no_grad():
        parts = [
            network.representation(torch.from_numpy(x[i : i + batch_size]).to(device), layer)
            for i in range(0, len(x), batch_size)
        ]
    return torch.cat(parts).float().cpu().numpy()
