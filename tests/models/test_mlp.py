from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import make_blobs
from sklearn.neural_network import MLPClassifier

from subpop_runner.models.mlp import MLP, loss_and_gradients
from subpop_runner.types import Part, PoisonSet

from ..conftest import train_heads


@pytest.mark.parametrize("n_classes", [2, 3])
def test_each_victim_has_sklearns_parameters(n_classes):
    """Two classes: one logistic output unit, as MLPClassifier; more: one logit per class."""
    x, y = make_blobs(60, n_features=4, centers=n_classes, random_state=0)
    reference = MLPClassifier(hidden_layer_sizes=(10,), max_iter=5).fit(x, y)
    expected = sum(a.size for a in reference.coefs_ + reference.intercepts_)
    module = MLP(n_features=4, n_classes=n_classes, n_victims=3)
    assert sum(p.numel() for p in module.parameters()) == 3 * expected
    proba = module.predict_proba(torch.from_numpy(x).float())
    assert proba.shape == (3, 60, n_classes)
    assert torch.allclose(proba.sum(-1), torch.ones(3, 60))


def test_multiclass_victims_learn_separable_classes():
    x, y = make_blobs(600, n_features=5, centers=4, cluster_std=0.5, random_state=1)
    train = Part(x[:400].astype(np.float32), y[:400])
    trainer = partial(L.Trainer, accelerator="cpu", devices=1, max_epochs=200)
    victims = train_heads(train, [PoisonSet.empty((5,))] * 2, model=MLP, trainer=trainer, seed=0)
    accuracy = (victims.predict(x[400:].astype(np.float32)) == y[400:]).mean(1)
    assert accuracy.min() > 0.95


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_gradients_are_those_of_sklearns_batch_loss(n_classes, masked):
    """The hand-derived gradients equal autograd's on each victim's own batch: the shared rows
    it keeps plus its poison rows, mean loss + 0.5 * l2 * ||W||^2 / batch size."""
    torch.manual_seed(0)
    module = MLP(n_features=4, n_classes=n_classes, n_victims=3, l2=0.1)
    x, y = torch.randn(7, 4), torch.randint(0, n_classes, (7,))
    poison_x, poison_y = torch.randn(3, 2, 4), torch.randint(0, n_classes, (3, 2))
    poison_weight = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    keep = (torch.rand(7, 3) < 0.6).float() if masked else None
    layers = module.views(module.weights.detach())
    loss, count, grads = loss_and_gradients(
        x, y, poison_x, poison_y, poison_weight, keep, *layers, module.l2
    )
    for v in range(3):
        w1, b1, w2, b2 = (p[..., v].clone().requires_grad_() for p in layers)
        own = poison_weight[v] > 0
        kept = torch.ones(7, dtype=torch.bool) if keep is None else keep[:, v] > 0
        rows = torch.cat([x[kept], poison_x[v][own]])
        labels = torch.cat([y[kept], poison_y[v][own]])
        logits = torch.relu(rows @ w1 + b1) @ w2.T + b2
        if n_classes == 2:
            data_loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
        else:
            data_loss = F.cross_entropy(logits, labels)
        penalty = 0.5 * module.l2 * (w1.square().sum() + w2.square().sum()) / len(rows)
        (data_loss + penalty).backward()
        assert count[v] == len(rows)
        assert torch.allclose(loss[v], data_loss + penalty)
        expected_grads = (w1.grad, b1.grad, w2.grad, b2.grad)
        for got, expected in zip([g[..., v] for g in grads], expected_grads, strict=True):
            assert torch.allclose(got, expected, atol=1e-6)
