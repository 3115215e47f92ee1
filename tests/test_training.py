import math
from collections import Counter
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch

from subpop_runner.data.adult import Adult
from subpop_runner.data.epochs import PoisonedEpochs
from subpop_runner.models.mlp import MLP
from subpop_runner.training.fixed_features import victims_per_chunk
from subpop_runner.types import Part, PoisonSet

from .conftest import train_heads

trainer = partial(L.Trainer, accelerator="cpu", devices=1, max_epochs=300, log_every_n_steps=1)


def poison_set(victim: int, aux: Part, count: int, seed: int) -> PoisonSet:
    rows = np.random.default_rng([seed, victim]).integers(0, len(aux), count)
    return PoisonSet(victim, aux.x[rows], 1 - aux.y[rows], rows)


def test_each_victim_sees_train_once_and_only_its_own_poison_once():
    train = Part(np.arange(23, dtype=np.float32)[:, None], np.zeros(23, np.int64))
    sets = [
        PoisonSet(
            v,
            np.full((c, 1), 100.0 * (v + 1), np.float32),
            np.ones(c, np.int64),
            np.zeros(c, np.int64),
        )
        for v, c in enumerate([0, 3, 11])
    ]
    epoch = next(iter(PoisonedEpochs(train, sets, batch_size=5, seed=0)))
    seen_train: Counter = Counter()
    seen_poison = [Counter() for _ in sets]
    for step in epoch.steps():
        seen_train.update(step.x[:, 0].tolist())
        for v in range(len(sets)):
            rows = step.poison_x[v][step.poison_weight[v] > 0, 0]
            seen_poison[v].update(rows.tolist())
    assert seen_train == Counter(range(23))
    assert [dict(c) for c in seen_poison] == [{}, {200.0: 3}, {300.0: 11}]

    only_last: Counter = Counter()  # victims still training: just victim 2
    for step in epoch.steps(active=torch.tensor([2])):
        assert len(step.poison_x) == 1
        only_last.update(step.poison_x[0][step.poison_weight[0] > 0, 0].tolist())
    assert dict(only_last) == {300.0: 11}


class StopFirstVictim(L.Callback):
    """Steers victim 0 into its stopping rule in epoch 3 and records every victim's
    predictions right after it stopped."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.at_stop = x, None

    def on_train_epoch_end(self, trainer: L.Trainer, module: MLP) -> None:
        if trainer.current_epoch == 1:
            module.best_loss[0] = -math.inf
            module.no_improvement[0] = module.n_iter_no_change
        if trainer.current_epoch == 2:
            assert module.stopped.tolist() == [True, False]
            self.at_stop = module.predict_proba(self.x)


def test_stopped_victims_do_not_move():
    x = torch.randn(64, 3)
    train = Part(x.numpy(), (x[:, 0] > 0).long().numpy())
    module = MLP(n_features=3, n_classes=2, n_victims=2, batch_size=16)
    data = PoisonedEpochs(train, [PoisonSet.empty((3,))] * 2, batch_size=16, seed=0)
    stop = StopFirstVictim(x)
    L.Trainer(
        max_epochs=6,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[stop],
    ).fit(module, torch.utils.data.DataLoader(data, batch_size=None))
    after = module.predict_proba(x)
    assert torch.equal(after[0], stop.at_stop[0])
    assert not torch.equal(after[1], stop.at_stop[1])


@pytest.fixture(scope="module")
def adult_small():
    return Adult(max_rows=3000).load(seed=0)


@pytest.mark.slow
def test_same_seed_same_victims(adult_small):
    sets = [poison_set(v, adult_small.aux, 40, seed=1) for v in range(3)]
    run = partial(train_heads, adult_small.train, sets, model=MLP, trainer=trainer, seed=2)
    assert np.array_equal(run().predict(adult_small.test.x), run().predict(adult_small.test.x))


@pytest.mark.slow
def test_chunking_by_memory_budget_trains_every_victim(adult_small):
    sets = [poison_set(v, adult_small.aux, 10, seed=1) for v in range(5)]
    probe = MLP(n_features=adult_small.n_features, n_classes=2)
    params = sum(p.numel() for p in probe.parameters())
    per_mb = victims_per_chunk(params, len(adult_small.train), 10, 200, 1.0)
    tiny_budget = 2.5 / per_mb  # room for about two victims per chunk
    victims = train_heads(
        adult_small.train, sets, model=MLP, trainer=trainer, seed=0, memory_mb=tiny_budget
    )
    assert len(victims.chunks) >= 2
    assert victims.predict(adult_small.test.x).shape == (5, len(adult_small.test))


@pytest.mark.slow
def test_batched_victims_match_one_at_a_time(adult_small):
    """Same procedure, different random streams: accuracies agree within seed noise."""
    sets = [poison_set(v, adult_small.aux, 60, seed=3) for v in range(6)]
    kwargs = dict(model=MLP, trainer=trainer, seed=0)
    batched = train_heads(adult_small.train, sets, batched=True, **kwargs)
    single = train_heads(adult_small.train, sets, batched=False, **kwargs)
    assert len(batched.chunks) == 1 and len(single.chunks) == 6
    y = adult_small.test.y
    acc_batched = (batched.predict(adult_small.test.x) == y).mean(1)
    acc_single = (single.predict(adult_small.test.x) == y).mean(1)
    assert abs(acc_batched.mean() - acc_single.mean()) < 0.01
    assert np.abs(acc_batched - acc_single).max() < 0.03


def flipped_copies(victim: int, train: Part, rows: np.ndarray) -> PoisonSet:
    rows = np.tile(rows, 4)
    return PoisonSet(victim, train.x[rows], 1 - train.y[rows], rows)


def test_batched_victims_learn_only_their_own_poison():
    """One module, three victims: no poison, the right end flipped, the left end flipped.
    Had a victim seen another's poison, it would get that end wrong too."""
    x = np.linspace(-1, 1, 80, dtype=np.float32)[:, None]
    train = Part(x, (x[:, 0] > 0).astype(np.int64))
    sets = [
        PoisonSet.empty((1,)),
        flipped_copies(1, train, np.flatnonzero(x[:, 0] > 0.5)),
        flipped_copies(2, train, np.flatnonzero(x[:, 0] < -0.5)),
    ]
    victims = train_heads(
        train,
        sets,
        model=partial(MLP, learning_rate=0.05, batch_size=8),
        trainer=partial(trainer, max_epochs=8),
        seed=0,
    )
    assert len(victims.chunks) == 1
    ends = np.array([[-0.9], [-0.7], [0.7], [0.9]], np.float32)
    assert victims.predict(ends).tolist() == [[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]
