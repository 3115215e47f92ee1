import numpy as np
import torch
from torch import nn

from subpop_runner.data.epochs import PoisonedEpochs
from subpop_runner.models.linear_head import LinearHead
from subpop_runner.types import Part, PoisonSet


def test_batched_heads_train_as_each_victim_would_alone_with_keras_l2():
    """Three victims in one module, one epoch of Adam: each victim's weights match a plain
    softmax regression trained alone on its own batches (train block + its poison rows) with
    the loss mean cross-entropy + l2 * ||W||^2, the authors' Keras recipe."""
    rng = np.random.default_rng(0)
    n, d, classes, l2 = 40, 6, 3, 0.05
    train = Part(rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, classes, n))
    sets = [
        PoisonSet(v, rng.normal(3.0, 1.0, (k, d)).astype(np.float32), np.full(k, v), np.arange(k))
        for v, k in enumerate([0, 7, 15])
    ]
    epoch = next(iter(PoisonedEpochs(train, sets, batch_size=8, seed=0)))
    head = LinearHead(
        n_features=d, n_classes=classes, n_victims=3, learning_rate=0.05, l2=l2, seed=1
    )
    start = head.weights.detach().clone().view(d, 3, classes)
    optimizer = head.configure_optimizers()
    for rows in epoch.rows():
        optimizer.zero_grad()
        head._loss(*rows[:5]).backward()
        optimizer.step()

    for v in range(3):
        weights = nn.Parameter(start[:, v].clone())
        bias = nn.Parameter(torch.zeros(classes))
        alone = torch.optim.Adam([weights, bias], lr=0.05)
        for x, y, poison_x, poison_y, *_ in epoch.rows(active=torch.tensor([v])):
            alone.zero_grad()
            batch_x, batch_y = torch.cat([x, poison_x]), torch.cat([y, poison_y])
            loss = nn.functional.cross_entropy(batch_x @ weights + bias, batch_y)
            (loss + l2 * weights.square().sum()).backward()
            alone.step()
        trained = head.weights.detach().view(d, 3, classes)[:, v]
        torch.testing.assert_close(trained, weights.detach(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            head.bias.detach().view(3, classes)[v], bias.detach(), atol=1e-5, rtol=1e-4
        )
    assert not torch.allclose(start[:, 2], head.weights.detach().view(d, 3, classes)[:, 2])


def test_a_keep_mask_drops_shared_rows_from_one_victims_loss_only():
    """Victim v's loss over a block with ``keep [n, V]`` is its mean cross-entropy over the
    rows it keeps (and its own poison rows), as if the others were not there."""
    torch.manual_seed(0)
    head = LinearHead(n_features=3, n_classes=2, n_victims=2)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    keep = torch.tensor([[1, 1], [0, 1], [1, 1], [0, 1], [1, 0], [1, 1]], dtype=torch.float32)
    none = torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    got = head._loss(x, y, *none, keep)
    with torch.no_grad():
        logits = head(x)  # [V, n, C]
    expected = sum(
        nn.functional.cross_entropy(logits[v][keep[:, v] > 0], y[keep[:, v] > 0]) for v in (0, 1)
    )
    torch.testing.assert_close(got, expected)
