"""ClusterMatch (paper Alg. 2): subpopulations are KMeans clusters of a representation.

A surrogate model is trained on the aux set; its chosen layer (``representation="hidden"``,
the last hidden layer, which the paper's Table 3 finds attacks best; or ``"input"``) is
projected by PCA and clustered by KMeans, both fitted on aux only. A point of train or test
belongs to the cluster whose centre is closest to its projection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from subpop_runner.data.splits import Splits
from subpop_runner.errors import ConfigError
from subpop_runner.selectors.base import (
    PARTS,
    Features,
    Memo,
    Selector,
    Subpopulation,
    describe,
    no_memo,
)

log = logging.getLogger(__name__)


class ClusterMatch(Selector):
    def __init__(
        self,
        *,
        k: int = 100,
        representation: str = "hidden",
        pca_components: int | None = 10,
        random_state: int = 0,
        take: Sequence[str] = ("all",),
        n: int | None = None,
    ) -> None:
        super().__init__(take=take, n=n)
        self.k, self.representation = k, representation
        self.pca_components, self.random_state = pca_components, random_state
        self.uses_surrogate = representation != "input"

    def check(self, splits: Splits) -> None:
        if self.k > len(splits.aux):
            raise ConfigError(
                f"selector.k: {self.k} is larger than the aux set ({len(splits.aux)} points); "
                f"choose selector.k <= {len(splits.aux)}"
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
        kmeans = KMeans(n_clusters=self.k, n_init="auto", random_state=self.random_state)
        kmeans.fit(pca.transform(aux))
        return {part: kmeans.predict(pca.transform(features[part])) for part in PARTS}

    def candidates(
        self, splits: Splits, features: Features, memo: Memo = no_memo
    ) -> list[Subpopulation]:
        settings = {
            "k": self.k,
            "representation": self.representation,
            "pca_components": self.pca_components,
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
