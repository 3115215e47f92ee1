"""The regimes a model family trains under: features computed once and reused, each victim
learning only its own poison, whichever regime."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from subpop_runner.cache import StageCache
from subpop_runner.models.linear_head import LinearHead
from subpop_runner.models.network import Backbone, Network
from subpop_runner.training.base import Fit
from subpop_runner.training.end_to_end import EndToEnd, TrainAndPoison, shift_and_flip
from subpop_runner.training.fixed_features import FixedFeatures
from subpop_runner.types import Part, PoisonSet, Splits

trainer = partial(L.Trainer, accelerator="cpu", devices=1, max_epochs=50)


class CountingBackbone(Backbone):
    """A frozen 'backbone' whose features are the mean of each image row; counts the images
    it was asked for."""

    layers = ("input", "rows")

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return x.mean(dim=(1, 3))

    def representation(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        return self.pooled_features(x)


class TinyNet(Network):
    """An end-to-end network on 1x4x4 'images': flatten, linear."""

    layers = ("input", "logits")

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(int(np.prod(input_shape)), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))

    def representation(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        return x.flatten(1) if layer == "input" else self(x)


def images(n: int, seed: int) -> Part:
    """1x4x4 images whose class is the sign of their mean brightness."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(-1, 1, n).astype(np.float32)
    x = level[:, None, None, None] + 0.05 * rng.standard_normal((n, 1, 4, 4)).astype(np.float32)
    return Part(x, (level > 0).astype(np.int64))


@pytest.fixture
def splits() -> Splits:
    return Splits(images(200, 0), images(200, 1), images(200, 2), class_names=("dark", "bright"))


def in_memory_cache():
    """A stage cache in a dict: ``(memo, stored)``."""
    stored = {}

    def memo(stage, parts, compute, mapped=False):
        key = (stage, tuple(sorted(parts.items())))
        if key not in stored:
            stored[key] = compute()
        return stored[key]

    return memo, stored


def flip_brightest(splits: Splits, subpop_id: int, threshold: float) -> PoisonSet:
    """Copies of the aux images brighter than ``threshold``, labelled dark (x4)."""
    rows = np.tile(np.flatnonzero(splits.aux.x.mean((1, 2, 3)) > threshold), 4)
    return PoisonSet(subpop_id, splits.aux.x[rows], np.zeros(len(rows), np.int64), rows)


def test_backbone_features_are_computed_once_and_poison_copies_reuse_aux_rows(splits):
    backbone, (memo, stored) = CountingBackbone(), in_memory_cache()

    regime = FixedFeatures(head=partial(LinearHead, epochs=2), backbone=backbone)
    fit = Fit(trainer, seed=0, memo=memo, splits=splits)
    regime.fit(splits.aux, [PoisonSet.empty((1, 4, 4))], fit)  # the surrogate: aux features
    victims = regime.fit(splits.train, [flip_brightest(splits, 0, 0.5)] * 3, fit)
    victims.predict(splits.test.x)
    victims.predict(splits.test.x)
    # train, aux and test, each once; the poison rows came from aux's features.
    assert backbone.seen == 600
    assert len(stored) == 3
    fresh = FixedFeatures(head=partial(LinearHead, epochs=2), backbone=CountingBackbone())
    fresh.fit(splits.train, [PoisonSet.empty((1, 4, 4))], Fit(trainer, 0, memo=memo))
    assert fresh.backbone.seen == 0  # a later job finds the features in the stage cache


def test_linear_heads_learn_only_their_own_poison(splits):
    """One module, three victims: clean, the brightest flipped, nothing else flipped. Had a
    victim seen another's poison, it would call bright images dark too."""
    regime = FixedFeatures(
        head=partial(LinearHead, epochs=40, learning_rate=0.05, l2=0.0),
        backbone=CountingBackbone(),
    )
    sets = [PoisonSet.empty((1, 4, 4)), flip_brightest(splits, 1, 0.6), PoisonSet.empty((1, 4, 4))]
    victims = regime.fit(splits.train, sets, Fit(trainer, seed=0, splits=splits))
    assert len(victims.chunks) == 1
    brightest = splits.test.x[splits.test.x.mean((1, 2, 3)) > 0.8]
    predicted = victims.predict(brightest).mean(1)
    assert predicted[0] > 0.9 and predicted[2] > 0.9  # clean victims: bright
    assert predicted[1] < 0.5  # the poisoned one: mostly dark
    assert victims.representation(brightest, "rows").shape == (3, len(brightest), 4)


def test_end_to_end_victims_train_their_own_network(splits):
    regime = EndToEnd(network=TinyNet, learning_rate=0.1, batch_size=32, epochs=10)
    sets = [PoisonSet.empty((1, 4, 4)), flip_brightest(splits, 1, 0.3)]
    victims = regime.fit(splits.train, sets, Fit(trainer, seed=0, batched=False, splits=splits))
    brightest = splits.test.x[splits.test.x.mean((1, 2, 3)) > 0.8]
    predicted = victims.predict(brightest).mean(1)
    assert predicted[0] > 0.9 and predicted[1] < 0.5
    assert victims.predict_proba(splits.test.x).shape == (2, 200, 2)
    assert victims.representation(splits.test.x, "logits").shape == (2, 200, 2)
    again = regime.fit(splits.train, sets, Fit(trainer, seed=0, batched=False, splits=splits))
    assert np.array_equal(again.predict_proba(splits.test.x), victims.predict_proba(splits.test.x))


def test_stacked_victims_learn_only_their_own_poison(splits):
    """training.batched=true: two victims in one vmapped module, as on a GPU."""
    regime = EndToEnd(network=TinyNet, learning_rate=0.1, batch_size=32, epochs=10)
    sets = [PoisonSet.empty((1, 4, 4)), flip_brightest(splits, 1, 0.3)]
    assert regime.victims_per_module((1, 4, 4), 2, memory_mb=1) > 2
    victims = regime.fit(splits.train, sets, Fit(trainer, seed=0, batched=True, splits=splits))
    brightest = splits.test.x[splits.test.x.mean((1, 2, 3)) > 0.8]
    predicted = victims.predict(brightest).mean(1)
    assert predicted[0] > 0.9 and predicted[1] < 0.5


def test_the_trainer_epoch_cap_bounds_end_to_end_epochs(splits):
    """size=smoke lowers trainer.max_epochs; a model's own 12 epochs must obey it."""
    counted = []

    class Count(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            counted.append(trainer.current_epoch)

    capped = partial(L.Trainer, accelerator="cpu", devices=1, max_epochs=2, callbacks=[Count()])
    EndToEnd(network=TinyNet, epochs=12).fit(
        splits.train, [PoisonSet.empty((1, 4, 4))], Fit(capped, seed=0, splits=splits)
    )
    assert counted == [0, 1]


def test_augmentation_shifts_by_at_most_an_eighth_and_flips():
    torch.manual_seed(0)
    x = torch.zeros(200, 1, 16, 16)
    x[:, :, 7:9, 7:9] = 1.0  # a bright 2x2 dot in the middle
    out = shift_and_flip(x)
    rows, cols = torch.nonzero(out[:, 0] > 0.5, as_tuple=True)[1:]
    assert rows.min() >= 7 - 2 and rows.max() <= 8 + 2  # 1/8 of 16 = 2 pixels each way
    assert cols.min() >= 7 - 2 and cols.max() <= 8 + 2
    assert not torch.equal(out, x)
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)))


class CountingFront(Network):
    """A frozen front (BERT-LL's frozen blocks, in miniature): doubles the images, in half
    precision, and counts the images it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def cached_inputs(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return (2 * x).half()


class HalfNet(TinyNet):
    """TinyNet reading half-precision inputs, as BERT-LL's last block reads cached states."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


def test_end_to_end_on_a_frozen_front_computes_it_once_and_learns_the_poison(splits):
    """BERT-LL's shape: victims train on a frozen front's cached output, never recomputing
    it; predictions go through the same front; poison copied from aux reuses aux's output."""
    front, (memo, _) = CountingFront(), in_memory_cache()

    regime = EndToEnd(network=HalfNet, learning_rate=0.1, epochs=10, frozen=front)
    fit = Fit(trainer, seed=0, batched=False, memo=memo, splits=splits)
    regime.fit(splits.aux, [PoisonSet.empty((1, 4, 4))], fit)
    sets = [PoisonSet.empty((1, 4, 4)), flip_brightest(splits, 1, 0.3)]
    victims = regime.fit(splits.train, sets, fit)
    brightest = splits.test.x[splits.test.x.mean((1, 2, 3)) > 0.8]
    predicted = victims.predict(brightest).mean(1)
    victims.predict(splits.test.x)
    assert predicted[0] > 0.9 and predicted[1] < 0.5
    assert front.seen == 200 * 3 + len(brightest)  # aux, train, test, once each
    assert victims.representation(splits.test.x, "input").shape == (2, 200, 16)


def test_linear_schedule_decays_to_zero_over_the_fit():
    seen = []

    class Rates(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    part = images(64, 0)
    regime = EndToEnd(
        network=TinyNet,
        learning_rate=0.1,
        batch_size=16,
        epochs=2,
        optimizer="adamw",
        schedule="linear",
    )
    with_rates = partial(
        L.Trainer, accelerator="cpu", devices=1, max_epochs=5, callbacks=[Rates()]
    )
    regime.fit(part, [PoisonSet.empty((1, 4, 4))], Fit(with_rates, seed=0, batched=False))
    assert seen == pytest.approx([0.1 * (1 - step / 8) for step in range(8)])


def test_victims_on_a_memory_mapped_front_equal_those_on_one_in_memory(splits, tmp_path):
    """The front's output read from the stage cache's memory-mapped files (BERT-LL's states
    at paper size do not fit in memory) trains the very same victims, stacked or not."""
    cache, asked = StageCache(dir=str(tmp_path)), []

    def mapped_memo(stage, parts, compute, mapped=False):
        asked.append(mapped)
        return cache.get(stage, parts, compute, code=("subpop_runner.training",), mapped=mapped)

    sets = [PoisonSet.empty((1, 4, 4)), flip_brightest(splits, 1, 0.3)]
    for batched in (False, True):
        predictions = []
        for memo in (in_memory_cache()[0], mapped_memo):
            regime = EndToEnd(network=HalfNet, learning_rate=0.1, epochs=3, frozen=CountingFront())
            fit = Fit(trainer, seed=0, batched=batched, memo=memo, splits=splits)
            predictions.append(regime.fit(splits.train, sets, fit).predict_proba(splits.test.x))
        assert np.array_equal(predictions[0], predictions[1])
    assert cache.tags() == {"cache.features": "hit"}  # later fits read the files back
    assert asked and all(asked)  # the regime asks for its front's output memory-mapped


def test_batches_gather_train_and_poison_rows_as_if_concatenated():
    train = Part(np.arange(10, dtype=np.float16)[:, None], np.zeros(10, np.int64))
    poison = [
        PoisonSet(1, np.array([[100.0], [101.0]], np.float16), np.ones(2, np.int64), None),
        PoisonSet(2, np.array([[200.0]], np.float16), np.full(1, 2, np.int64), None),
    ]
    rows = TrainAndPoison(train, poison)
    index = torch.tensor([[11, 3, 3, 0], [12, 9, 10, 1]])
    x, y = rows[index]
    together = np.concatenate([train.x, *(p.x for p in poison)])
    assert len(rows) == 13 and x.shape == (2, 4, 1)
    assert np.array_equal(x.numpy(), together[index.numpy()])
    assert y.tolist() == [[1, 0, 0, 0], [2, 0, 1, 0]]
