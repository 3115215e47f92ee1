"""Fine-pruning (Liu, Dolan-Gavitt, Garg, RAID 2018), on the last layer's input.

The defender owns a clean holdout: a stated slice of the test part (``holdout_fraction``),
drawn with the seed and excluded from every metric of the run. Per victim: the penultimate
units ordered by their mean activation on the holdout, lowest first, are pruned one by one
(the unit's column of the last layer set to 0) for as long as holdout accuracy stays within
``max_drop`` (4 points) of the unpruned victim's; then the last layer is fine-tuned on the
holdout (``epochs`` full-batch Adam steps at ``learning_rate``, pruned units kept at 0).
The pruned victims and the fine-tuned ones are both measured (``pruned_target_damage``, and
the defended damage). No training row is removed.

Pruning and fine-tuning act on what every victim offers (its ``penultimate`` representation
and ``last_layer``), so every family is pruned the same way; the original fine-tunes the whole
network, which only end-to-end families could do. A model whose last layer reads its raw input
(a linear head on tabular columns) has nothing to prune: a config error.
"""

from __future__ import annotations

import numpy as np
import torch

from subpop_runner.defenses.base import Defended, Defense, TrainingRows
from subpop_runner.errors import ConfigError
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import PENULTIMATE, Victims, proba_from_logits


class FinePruning(Defense):
    def __init__(
        self,
        *,
        holdout_fraction: float = 0.05,
        max_drop: float = 0.04,
        epochs: int = 100,
        learning_rate: float = 0.01,
    ):
        self.holdout_fraction, self.max_drop = holdout_fraction, max_drop
        self.epochs, self.learning_rate = epochs, learning_rate

    def check(self, n_train: int, regime: Regime) -> None:
        if not regime.prunable:
            raise ConfigError(
                "defense=fine_pruning: this model's last layer reads its input directly, so it "
                "has no hidden units to prune; use a model with a hidden or pooled layer "
                "(model=mlp, a backbone's *_ll, conv, *_ft)"
            )

    def holdout(self, n_test: int, seed: int) -> np.ndarray:
        """The test rows the defender owns (indices)."""
        count = max(1, int(round(self.holdout_fraction * n_test)))
        return np.sort(np.random.default_rng([seed, 11]).permutation(n_test)[:count])

    def defend(self, rows: TrainingRows, victims: Victims) -> Defended:
        holdout_x, holdout_y = rows.holdout
        hidden = victims.representation(holdout_x, PENULTIMATE)
        pruned, tuned, details = [], [], []
        for h, (weights, bias) in zip(hidden, victims.last_layer(), strict=True):
            mask, accuracy = prune(h, holdout_y, weights, bias, self.max_drop)
            pruned.append((weights * mask, bias))
            tuned_weights, tuned_bias = fine_tune(
                h * mask, holdout_y, weights * mask, bias, self.epochs, self.learning_rate
            )
            tuned.append((tuned_weights * mask, tuned_bias))
            details.append(
                {
                    "all": {
                        "pruned_units": int((mask == 0).sum()),
                        "units": len(mask),
                        "holdout_accuracy_before": accuracy[0],
                        "holdout_accuracy_pruned": accuracy[1],
                        "holdout_rows": len(holdout_y),
                    }
                }
            )
        keep = [np.ones(len(labels), bool) for labels in rows.labels]
        scores = [np.zeros(len(labels)) for labels in rows.labels]
        return Defended(
            keep,
            scores,
            [0] * len(rows),
            NewLastLayer(victims, tuned),
            details,
            stages={"pruned": NewLastLayer(victims, pruned)},
        )


def prune(
    hidden: np.ndarray, labels: np.ndarray, weights: np.ndarray, bias: np.ndarray, max_drop: float
) -> tuple[np.ndarray, tuple[float, float]]:
    """The unit mask ``[d]`` (0: pruned) and holdout accuracy before and after pruning."""
    logits = hidden @ weights.T + bias
    accuracy = float((predicted(logits) == labels).mean())
    mask, current = np.ones(hidden.shape[1]), accuracy
    for unit in np.argsort(hidden.mean(0), kind="stable"):
        trial = logits - np.outer(hidden[:, unit], weights[:, unit])
        trial_accuracy = float((predicted(trial) == labels).mean())
        if trial_accuracy < accuracy - max_drop:
            break
        logits, mask[unit], current = trial, 0.0, trial_accuracy
    return mask, (accuracy, current)


def fine_tune(
    hidden: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray,
    epochs: int,
    learning_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The last layer after ``epochs`` full-batch Adam steps on the holdout's cross-entropy
    (a single logistic output for two classes, as the MLP has)."""
    h = torch.from_numpy(np.asarray(hidden, np.float32))
    y = torch.from_numpy(labels)
    w = torch.tensor(weights, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(bias, dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=learning_rate)
    for _ in range(epochs):
        optimizer.zero_grad()
        logits = h @ w.T + b
        if logits.shape[1] == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.float())
        else:
            loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
    return w.detach().numpy(), b.detach().numpy()


def predicted(logits: np.ndarray) -> np.ndarray:
    return proba_from_logits(logits).argmax(-1)


class NewLastLayer(Victims):
    """Victims whose last layer is replaced (pruned and/or fine-tuned): their penultimate
    representation through the new weights."""

    def __init__(self, victims: Victims, layers: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.victims, self.layers, self.device = victims, layers, victims.device

    def __len__(self) -> int:
        return len(self.layers)

    def last_layer(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return self.layers

    def representation(self, x: np.ndarray, layer: str) -> np.ndarray:
        return self.victims.representation(x, layer)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        hidden = self.victims.representation(x, PENULTIMATE)
        return np.stack(
            [proba_from_logits(h @ w.T + b) for h, (w, b) in zip(hidden, self.layers, strict=True)]
        )
