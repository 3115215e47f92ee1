"""The reference victim: scikit-learn's ``MLPClassifier`` itself, the paper's Adult learner
(Sec. 5.1), fitted one victim at a time on ``train ∪ poison`` (``model=sklearn_mlp``).

It exists to check `subpop_runner.models.mlp.MLP`, the batched reproduction every Adult run
uses, against the real thing inside the same experiment: the same split, subpopulations and
poison sets, trained both ways (docs/results/adult_notes.md). So that the subpopulations are
the same, the surrogate that ClusterMatch clusters on is trained by ``surrogate`` (the batched
MLP's regime, with its seed), not by scikit-learn: the clusters, and hence the poison sets
drawn from them, are those of ``model=mlp``. The clean victim, the damage baseline, is a
scikit-learn fit like the poisoned ones.

Every victim is fitted with ``random_state = seed``: one at a time, as a researcher without
this runner would, so a victim differs from the clean one only by its poison.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed
from sklearn.neural_network import MLPClassifier
from tqdm.auto import tqdm

from subpop_runner.errors import ConfigError
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import PENULTIMATE, Victims, kept_rows
from subpop_runner.types import Part, PoisonSet, Splits

log = logging.getLogger(__name__)

LAYERS = ("input", "hidden")


class SklearnMLP(Regime):
    """A training regime (what a model config's ``_target_`` names): ``fit`` returns one
    fitted ``MLPClassifier`` per poison set. ``surrogate``: the regime ClusterMatch's
    surrogate trains with (see the module docstring)."""

    layers = LAYERS
    gradients = False  # a fitted MLPClassifier is not a torch function of its inputs

    def __init__(
        self,
        *,
        surrogate: object,
        hidden_units: int = 10,
        max_iter: int = 3000,
        n_jobs: int = 1,
    ) -> None:
        self.surrogate = surrogate
        self.hidden_units, self.max_iter, self.n_jobs = hidden_units, max_iter, n_jobs

    def check(self, splits: Splits) -> None:
        if splits.vocabulary is not None or len(splits.input_shape) != 1:
            raise ConfigError(
                "model=sklearn_mlp: scikit-learn's MLPClassifier reads tabular rows only "
                "(dataset=adult); use model=mlp, conv or a transfer model for this dataset"
            )

    def fit(
        self,
        train: Part,
        poison_sets: Sequence[PoisonSet],
        fit: object,
        description: str = "",
        keep: Sequence[np.ndarray] | None = None,
    ) -> SklearnVictims:
        """One fit per poison set on ``train ∪ poison`` (restricted per victim by ``keep``)."""
        seed = fit.seed
        train_keep, poison_sets = kept_rows(len(train), poison_sets, keep)

        def one(poison: PoisonSet, rows: np.ndarray | None) -> MLPClassifier:
            model = MLPClassifier(
                hidden_layer_sizes=(self.hidden_units,),
                max_iter=self.max_iter,
                random_state=seed,
            )
            x, y = (train.x, train.y) if rows is None else (train.x[rows], train.y[rows])
            rows = np.concatenate([x, poison.x])
            return model.fit(rows.reshape(len(rows), -1), np.concatenate([y, poison.y]))

        bar = tqdm(poison_sets, desc=description or "victims", unit="victim", leave=False)
        models = Parallel(n_jobs=self.n_jobs)(
            delayed(one)(p, None if train_keep is None else train_keep[v])
            for v, p in enumerate(bar)
        )
        epochs = [m.n_iter_ for m in models]
        log.info(
            "fitted %d %s with scikit-learn, %d-%d epochs",
            len(models),
            description,
            min(epochs),
            max(epochs),
        )
        return SklearnVictims(models)


@dataclass
class SklearnVictims(Victims):
    """Fitted ``MLPClassifier``s, in the order of their poison sets."""

    models: list[MLPClassifier] = field(repr=False)
    device: str = "cpu"

    def __len__(self) -> int:
        return len(self.models)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        rows = x.reshape(len(x), -1)
        return np.stack([m.predict_proba(rows) for m in self.models])

    def last_layer(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The output layer: one logistic unit for two classes, as in `MLP`."""
        return [(m.coefs_[-1].T, m.intercepts_[-1]) for m in self.models]

    def representation(self, x: np.ndarray, layer: str) -> np.ndarray:
        rows = x.reshape(len(x), -1)
        layer = "hidden" if layer == PENULTIMATE else layer
        if layer == "input":
            return np.broadcast_to(rows, (len(self.models), *rows.shape))
        if layer == "hidden":  # MLPClassifier's ReLU hidden layer
            return np.stack(
                [np.maximum(rows @ m.coefs_[0] + m.intercepts_[0], 0) for m in self.models]
            )
        raise ValueError(f"no layer {layer!r}; valid: {', '.join(LAYERS)}")
