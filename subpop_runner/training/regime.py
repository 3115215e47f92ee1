"""What a model family is to the runner: a training regime (what ``conf/model/<name>.yaml``'s
``_target_`` builds). It trains one victim per poison set and says, by declared abilities with
defaults here, what its victims offer beyond `Victims` itself; defenses and attacks read these
abilities at validation and refuse a family that lacks one (scikit-learn's estimator tags are
the model: declared on the class, asked by name, never probed).

The regimes: `training.fixed_features.FixedFeatures` (heads on fixed features),
`training.end_to_end.EndToEnd` (whole networks, or BERT's last block on cached states) and
`models.sklearn_mlp.SklearnMLP` (scikit-learn's MLP, one fit per victim).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from subpop_runner.training.victims import Victims
    from subpop_runner.types import Part, PoisonSet, Splits


class Regime(ABC):
    """How a family's victims train.

    Abilities (class attributes; a subclass states the ones it has):

    - ``fixed_features``: its victims share fixed features (`victims.FEATURES`), the input of
      a head (the certified defense's ridge, the influence attack's refit read them);
    - ``gradients``: `Victims.differentiable` works (gradient attacks);
    - ``warm_start``: `fit` can start from trained victims' parameters (``start=``);
    - ``prunable``: the last layer reads learned units, not the raw input (fine-pruning);
    - ``surrogate``: the regime ClusterMatch's surrogate and the attacker's model train with,
      None for this one (the scikit-learn reference clusters on the batched MLP's surrogate).
    """

    fixed_features: bool = False
    gradients: bool = False
    warm_start: bool = False
    prunable: bool = True
    surrogate: Regime | None = None

    @property
    @abstractmethod
    def layers(self) -> tuple[str, ...]:
        """Layer names its victims' `Victims.representation` accepts (always ``input``)."""

    def check(self, splits: Splits) -> None:  # noqa: B027 (most families accept any data)
        """`ConfigError` when this family cannot read these data (before any training)."""

    @abstractmethod
    def fit(
        self,
        train: Part,
        poison_sets: Sequence[PoisonSet],
        fit: object,
        description: str = "victims",
        keep: Sequence[np.ndarray] | None = None,
    ) -> Victims:
        """One victim per poison set, trained on ``train ∪ poison`` (the rows ``keep[v]``
        keeps of victim v's, shared rows then own; all without it), with ``fit``'s trainer,
        seed and cache. A regime with ``warm_start`` also takes ``start=`` (victims of the same
        sets to start from)."""
