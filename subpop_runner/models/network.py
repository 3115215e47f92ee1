"""What every network offers the rest of the runner (its base classes), and helpers its files
share.

A `Network` maps inputs (images ``[n, C, H, W]``, float32, pixels scaled ``x / 255 - 0.5``; or
token ids) to logits ``[n, n_classes]`` and exposes the activations of a few named layers,
flattened to ``[n, d]``:
ClusterMatch clusters one of them (paper Sec. 5.2 and Table 3: later layers attack better).
A `Backbone` is a network pretrained elsewhere whose pooled features a new head is trained on
(VGG-LL / VGG-FT, Sec. 5.1; ResNet-50 embeddings, Sec. 5.5).

The pooled-features method is called `pooled_features`, not ``features``: torchvision's VGG
names its convolution stack ``features``, and its published state dict must load unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from subpop_runner.types import Splits


class Network(nn.Module):
    """An ``nn.Module`` with logits from `forward` and named representation layers.

    ``layers``: the names `representation` accepts, from the input to the last layer; always
    "input" for an image network (a class attribute, or set in ``__init__`` where they depend
    on a backbone, the class's then empty). ``check_inputs`` is the one optional ability,
    declared here: a network that can only read some data (a BERT, its tokenizer's ids)
    refuses others before any training.
    """

    layers: tuple[str, ...] = ()

    def representation(self, x: Tensor, layer: str) -> Tensor:
        """Activations ``[n, d]`` at ``layer``, flattened; ValueError for an unknown layer."""
        raise NotImplementedError

    def check_inputs(self, splits: Splits) -> None:
        """`ConfigError` when this network cannot read these data; any data by default."""


class Classifier(Network):
    """A network a victim trains end to end: its last layer and the layer feeding it are named,
    for what defenses and attacks inspect (`subpop_runner.training.victims`).

    ``penultimate``: the layer whose activations the last layer reads; ``classifier``: the last
    layer, logits = classifier(representation(x, penultimate))."""

    penultimate: str
    classifier: nn.Linear


class Backbone(Network):
    """A network pretrained elsewhere whose globally pooled last feature map feeds a new
    classification head (its layer ``pooled``); ``n_features``: that map's width."""

    n_features: int

    def pooled_features(self, x: Tensor) -> Tensor:
        """Pooled features ``[n, n_features]`` for inputs ``[n, ...]``."""
        raise NotImplementedError


def check_layer(layer: str, layers: tuple[str, ...]) -> None:
    """ValueError naming the valid layers unless ``layer`` is one of them."""
    if layer not in layers:
        raise ValueError(f"layer must be one of {', '.join(layers)}; got {layer!r}")


def activation_at(activations: Iterator[tuple[str, Tensor]], layer: str) -> Tensor:
    """The flattened activation named ``layer``, computing no layer after it."""
    for name, activation in activations:
        if name == layer:
            return activation.flatten(1)
    raise AssertionError(f"network yielded no layer {layer!r}")  # `check_layer` ran first


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block (a network's initial weights), leaving the
    caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
