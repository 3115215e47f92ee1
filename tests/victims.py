"""Victims for tests of what defenses and attacks decide: their outputs on a row depend on
that row's content alone (numpy, closed form, no training loop), so the same rows give the
same outputs however they are split or ordered, and a test measures the algorithm, not a
learner's noise."""

from __future__ import annotations

import numpy as np
import torch

from subpop_runner.training.differentiable import Differentiable
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import PENULTIMATE, Victims, proba_from_logits

HIDDEN = np.random.default_rng(42).normal(size=(2, 6)), np.random.default_rng(43).normal(size=6)


def hidden(x: np.ndarray) -> np.ndarray:
    """Fixed random ReLU features, each row's from its own values only (no matrix product,
    whose blocking could depend on the other rows)."""
    weights, bias = HIDDEN
    return np.maximum((x[:, :, None] * weights[None]).sum(1) + bias, 0.0)


class ContentVictims(Victims):
    """Victims whose outputs on a row depend on that row's content alone: a ridge last layer
    on ``features`` of the row (its penultimate representation)."""

    device = "cpu"
    features = staticmethod(hidden)

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.layers = layers

    @classmethod
    def fit(cls, rows: list[tuple[np.ndarray, np.ndarray]]) -> ContentVictims:
        layers = []
        for x, y in rows:
            order = np.lexsort((y, *x.T))  # one order for the same rows, however they came
            h = np.c_[cls.features(x[order]), np.ones(len(x))]
            solved = np.linalg.solve(h.T @ h + np.eye(h.shape[1]), h.T @ (np.eye(2)[y[order]]))
            layers.append((solved[:-1].T, solved[-1]))
        return cls(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        h = self.features(x)
        return np.stack(
            [proba_from_logits((h[:, None, :] * w[None]).sum(-1) + b) for w, b in self.layers]
        )

    def representation(self, x: np.ndarray, layer: str) -> np.ndarray:
        return np.repeat(self.features(x)[None], len(self), axis=0)

    def last_layer(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return self.layers


class LinearVictims(ContentVictims):
    """A ridge on the input itself, whose outputs depend on each row alone (numpy, no
    training loop: what the defense decides is the question here)."""

    features = staticmethod(lambda x: np.asarray(x, np.float64))


class Hidden(torch.nn.Module):
    """The content-only victims' fixed ReLU features, in torch."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor(HIDDEN[0], dtype=torch.float32))
        self.register_buffer("bias", torch.tensor(HIDDEN[1], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.weights + self.bias)


class AttackerVictims(ContentVictims):
    """Content-only victims that are also torch functions of their inputs."""

    def differentiable(self, v: int) -> Differentiable:
        weights, bias = self.layers[v]
        head = torch.nn.Linear(weights.shape[1], weights.shape[0])
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(weights))
            head.bias.copy_(torch.from_numpy(bias))
        return Differentiable(Hidden(), head)


def declared(name: str = "Declared", **abilities: object) -> Regime:
    """A regime that trains nothing and declares ``abilities`` (the others: `Regime`'s
    defaults), named ``name`` in refusals: what defenses' and attacks' checks read."""
    members = {"layers": ("input",), "fit": lambda self, *args, **kwargs: None, **abilities}
    return type(name, (Regime,), members)()


class Penultimate:
    """`TrainingRows` of two classes with given penultimate representations per victim; it
    records what it is asked to train."""

    def __init__(self, labels: list[np.ndarray], hidden: list[np.ndarray]) -> None:
        self.labels, self.hidden, self.n_classes, self.trained = labels, hidden, 2, []

    def __len__(self) -> int:
        return len(self.labels)

    def outputs(self, victims, what):
        assert what == PENULTIMATE
        return iter(self.hidden)

    def train(self, keep, start=None):
        self.trained.append(([k.copy() for k in keep], start))
        return "retrained"
