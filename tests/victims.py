"""Victims for tests of what defenses and attacks decide: their outputs on a row depend on
that row's content alone (numpy, closed form, no training loop), so the same rows give the
same outputs however they are split or ordered, and a test measures the algorithm, not a
learner's noise."""

from __future__ import annotations

import numpy as np
import torch

from subpop_runner.training.differentiable import Differentiable
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import PENULTIMATE, PROBA, Victims, proba_from_logits

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


def check_interface(
    victims: Victims,
    shared: np.ndarray,
    own: list[np.ndarray],
    y: np.ndarray,
    gradients: bool,
    layers: tuple[str, ...] = (),
) -> None:
    """What every `Victims` offers defenses and attacks (scikit-learn's ``check_estimator`` is
    the model), on ``shared`` rows with labels ``y`` and each victim's ``own`` rows:
    probabilities, logits = last layer on ``penultimate``, per-row cross-entropy, ``on_rows``,
    every named layer per victim, and ``differentiable`` wherever the family declares
    ``gradients``."""
    n = len(victims)
    assert n == len(own) and isinstance(victims, Victims)
    proba = victims.predict_proba(shared)
    assert proba.shape[:2] == (n, len(shared)) and proba.shape[2] >= 2
    np.testing.assert_allclose(proba.sum(-1), 1, atol=1e-5)
    np.testing.assert_array_equal(victims.predict(shared).shape, (n, len(shared)))
    hidden = victims.representation(shared, PENULTIMATE)
    recomputed = np.stack(
        [
            proba_from_logits(h @ w.T + b)
            for h, (w, b) in zip(hidden, victims.last_layer(), strict=True)
        ]
    )
    np.testing.assert_allclose(recomputed, proba, atol=1e-4)
    picked = np.take_along_axis(proba, np.broadcast_to(y[None, :, None], (n, len(y), 1)), -1)
    np.testing.assert_allclose(
        victims.loss(shared, y), -np.log(picked[..., 0]), rtol=1e-4, atol=1e-6
    )
    for layer in layers:
        out = victims.representation(shared, layer)
        assert out.shape[:2] == (n, len(shared)) and out.ndim == 3, layer
    for what in (PROBA, PENULTIMATE):
        outputs = list(victims.on_rows(shared, own, what))
        assert [len(o) for o in outputs] == [len(shared) + len(o) for o in own]
        for v, rows in enumerate(own):
            everything = np.concatenate([shared, rows])
            alone = (
                victims.predict_proba(everything)
                if what == PROBA
                else victims.representation(everything, what)
            )
            np.testing.assert_allclose(outputs[v], alone[v], atol=1e-5)
    if gradients:  # (a family may offer more than it declares: BERT-LL's cached-state block)
        for v in range(n):
            model = victims.differentiable(v)
            x = torch.from_numpy(shared)
            pixels = x.is_floating_point()  # token ids have no input gradient
            logits = model.logits(x.requires_grad_(True) if pixels else x)
            np.testing.assert_allclose(logits.softmax(-1).detach().numpy(), proba[v], atol=1e-5)
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
            # A pretrained backbone may carry parameters its features never use (an ImageNet
            # classifier): those have no gradient.
            by_input, *by_parameter = torch.autograd.grad(
                loss, [x if pixels else logits, *model.parameters], allow_unused=True
            )
            assert by_input.abs().sum() > 0
            assert any(g is not None and g.abs().sum() > 0 for g in by_parameter)
