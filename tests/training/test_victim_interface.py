"""The victim interface every model family must offer (in the spirit of scikit-learn's
``check_estimator``): defenses and optimisation attacks use it and nothing else, so every
family passes the same checks.

- per-victim training rows: keep masks that keep everything train exactly today's victims;
  a victim trains only on the rows its mask keeps, shared and own alike;
- ``penultimate`` and ``last_layer`` agree with ``predict_proba`` (logits are the last layer
  applied to the penultimate representation);
- ``loss`` is each row's cross-entropy; ``on_rows`` gives each victim its own rows;
- where the regime declares ``gradients``, ``differentiable(v)`` gives victim v's
  probabilities as a torch function, with gradients in its inputs and parameters.
"""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from subpop_runner.models.bert import BertClassifier, BertLastBlock
from subpop_runner.models.conv import Conv
from subpop_runner.models.linear_head import LinearHead
from subpop_runner.models.mlp import MLP
from subpop_runner.models.network import Backbone
from subpop_runner.models.sklearn_mlp import SklearnMLP
from subpop_runner.models.transfer import Transfer
from subpop_runner.training.base import Fit
from subpop_runner.training.end_to_end import EndToEnd
from subpop_runner.training.fixed_features import FixedFeatures
from subpop_runner.training.victims import (
    PENULTIMATE,
    Victims,
    kept_rows,
    proba_from_logits,
)
from subpop_runner.types import Part, PoisonSet, Splits
from tests.victims import check_interface

trainer = partial(L.Trainer, accelerator="cpu", devices=1, max_epochs=30)


class MeanBackbone(Backbone):
    """A frozen 'backbone': each image row's mean brightness as its pooled features."""

    layers = ("input", "pooled")
    n_features = 8

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 3))

    def representation(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        return x.flatten(1) if layer == "input" else self.pooled_features(x)


class TrainableBackbone(MeanBackbone):
    """`MeanBackbone` behind a trainable linear map: a backbone fine-tuning changes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mix = nn.Linear(8, 8)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mix(x.mean(dim=(1, 3))))


def images(n: int, seed: int) -> Part:
    """1x8x8 images whose class is the sign of their mean brightness."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(-1, 1, n).astype(np.float32)
    x = level[:, None, None, None] + 0.05 * rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    return Part(x, (level > 0).astype(np.int64))


@pytest.fixture(scope="module")
def splits() -> Splits:
    return Splits(images(120, 0), images(120, 1), images(120, 2), class_names=("dark", "bright"))


def flip_brightest(splits: Splits, subpop_id: int) -> PoisonSet:
    """Copies of the brightest aux images, labelled dark (x6)."""
    rows = np.tile(np.flatnonzero(splits.aux.x.mean((1, 2, 3)) > 0.5), 6)
    return PoisonSet(subpop_id, splits.aux.x[rows], np.zeros(len(rows), np.int64), rows)


FAMILIES = {
    "mlp": lambda: (FixedFeatures(head=partial(MLP, learning_rate=0.02, tol=0.0)), True),
    "linear_head": lambda: (
        FixedFeatures(head=partial(LinearHead, epochs=30, learning_rate=0.05)),
        True,
    ),
    "linear_head_on_backbone": lambda: (
        FixedFeatures(
            head=partial(LinearHead, epochs=30, learning_rate=0.05), backbone=MeanBackbone()
        ),
        True,
    ),
    "conv": lambda: (
        EndToEnd(network=partial(Conv, width=2), learning_rate=0.01, epochs=15),
        False,
    ),
    "conv_stacked": lambda: (
        EndToEnd(network=partial(Conv, width=2), learning_rate=0.01, epochs=15),
        True,
    ),
    "transfer_ft": lambda: (
        EndToEnd(
            network=partial(Transfer, backbone=TrainableBackbone(), trainable="all"),
            learning_rate=0.05,
            epochs=15,
        ),
        False,
    ),
    "sklearn_mlp": lambda: (SklearnMLP(surrogate=None, max_iter=300), False),
}


def train(family: str, splits: Splits, poison_sets, keep=None) -> Victims:
    regime, batched = FAMILIES[family]()
    fit = Fit(trainer, seed=0, batched=batched, splits=splits)
    return regime.fit(splits.train, poison_sets, fit, keep=keep)


def logits_from_last_layer(victims: Victims, x: np.ndarray) -> np.ndarray:
    """Probabilities recomputed from ``penultimate`` and ``last_layer`` alone."""
    hidden = victims.representation(x, PENULTIMATE)
    layers = victims.last_layer()
    return np.stack(
        [proba_from_logits(h @ w.T + b) for h, (w, b) in zip(hidden, layers, strict=True)]
    )


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, marks=pytest.mark.slow) if "conv" in f else f for f in FAMILIES],
)
def test_every_family_offers_the_victim_interface(family, splits):
    poison = flip_brightest(splits, 1)
    sets = [PoisonSet.empty((1, 8, 8)), poison]
    victims = train(family, splits, sets)
    assert isinstance(victims, Victims) and len(victims) == 2

    # Keeping every row trains exactly the victims of no mask (same seed, same numbers).
    everything = [np.ones(len(splits.train) + len(p), bool) for p in sets]
    kept_all = train(family, splits, sets, keep=everything)
    assert np.array_equal(
        kept_all.predict_proba(splits.test.x), victims.predict_proba(splits.test.x)
    )

    regime, _ = FAMILIES[family]()
    own = [p.x for p in sets]
    check_interface(victims, splits.test.x, own, splits.test.y, regime.gradients, regime.layers)

    # The poisoned victim learned its poison; with its poison rows masked out, it does not.
    bright = splits.test.x.mean((1, 2, 3)) > 0.6
    assert victims.predict(splits.test.x[bright])[1].mean() < 0.5
    without_poison = [
        everything[0],
        np.r_[np.ones(len(splits.train), bool), np.zeros(len(poison), bool)],
    ]
    cleaned = train(family, splits, sets, keep=without_poison)
    assert cleaned.predict(splits.test.x[bright])[1].mean() > 0.9
    # The same poison placed among the shared rows: the victim whose mask drops them is clean.
    shared = Part(np.concatenate([splits.train.x, poison.x]), np.r_[splits.train.y, poison.y])
    in_shared = Splits(shared, splits.aux, splits.test, class_names=splits.class_names)
    clean_rows = np.r_[np.ones(len(splits.train), bool), np.zeros(len(poison), bool)]
    regime, batched = FAMILIES[family]()
    fit = Fit(trainer, seed=0, batched=batched, splits=in_shared)
    empty = [PoisonSet.empty((1, 8, 8))] * 2
    masked = regime.fit(shared, empty, fit, keep=[np.ones(len(shared), bool), clean_rows])
    predicted = masked.predict(splits.test.x[bright]).mean(1)
    assert predicted[0] < 0.5 and predicted[1] > 0.9


@pytest.mark.parametrize("trainable", ["all", "last_block"])
def test_bert_networks_name_their_penultimate_layer_and_classifier(tiny_bert, trainable):
    """BERT's victims train end to end; their last layer reads the pooled ``[CLS]`` output."""
    torch.manual_seed(0)
    ids = torch.randint(5, 40, (6, 12))
    if trainable == "all":
        network = BertClassifier(name=str(tiny_bert), n_classes=2).eval()
        inputs = ids
    else:
        from subpop_runner.models.bert import BertBelowLastBlock

        network = BertLastBlock(name=str(tiny_bert), n_classes=2).eval()
        inputs = BertBelowLastBlock(name=str(tiny_bert)).cached_inputs(ids)
    with torch.no_grad():
        hidden = network.representation(inputs, network.penultimate)
        torch.testing.assert_close(network.classifier(hidden), network(inputs))


def test_keep_masks_split_into_shared_rows_and_kept_poison():
    poison = PoisonSet(3, np.arange(6.0).reshape(3, 2), np.array([1, 1, 0]), np.array([7, 8, 9]))
    mask = np.array([True, False, True, True, False, True])  # 3 train rows, then 3 poison rows
    train_keep, kept = kept_rows(3, [poison], [mask])
    assert train_keep.tolist() == [[True, False, True]]
    assert kept[0].source_index.tolist() == [7, 9] and kept[0].y.tolist() == [1, 0]
    assert kept_rows(3, [poison], None) == (None, [poison])
    with pytest.raises(ValueError, match="keep mask"):
        kept_rows(4, [poison], [mask])
