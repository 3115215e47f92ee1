"""VGG-16 (Simonyan & Zisserman 2015), the paper's VGG-LL / VGG-FT backbone (Sec. 5.1).

Module names follow torchvision's ``vgg16`` (convolutions at ``features.0, 2, 5, …, 28``, then
``avgpool`` and ``classifier.0, 3, 6``), so its published ImageNet state dict
(`IMAGENET_WEIGHTS`) loads unchanged; `forward` gives its 1000 ImageNet logits.

The features a transfer head trains on are those of the authors' Keras
``VGG16(include_top=False, pooling="avg")``: the last max pool's output averaged over space,
512 values ("pooled"). The paper's parameter counts (8K for VGG-LL, 134M for VGG-FT) would fit
a head on the 4096 fc7 units instead; the released code, followed here, does not do that.

Images are converted to what the torchvision weights expect: 3 channels, ImageNet
standardisation, optionally resized to ``resolution`` (five 2×2 poolings need at least 32×32).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from torch import Tensor, nn

from subpop_runner.models.inputs import (
    check_images,
    check_resolution,
    resized,
    rgb,
    torchvision_scale,
)
from subpop_runner.models.network import Backbone, activation_at, check_layer, seeded
from subpop_runner.models.weights import load_weights
from subpop_runner.types import Splits

IMAGENET_WEIGHTS = "https://download.pytorch.org/models/vgg16-397923af.pth"

# Configuration "D" of the VGG paper: output channels of each 3×3 convolution, "M" a max pool.
CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
BLOCKS = CONFIG.count("M")
MIN_SIZE = 2**BLOCKS


class VGG16(Backbone):
    """VGG-16 with torchvision's module names; layers after each max pool ("block1".."block5")
    and the globally averaged last one ("pooled", 512-d)."""

    layers = ("input", *(f"block{b}" for b in range(1, BLOCKS + 1)), "pooled")
    n_features = 512

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None = None,
        resolution: int | None = None,
        dropout: float = 0.5,
        seed: int = 0,
        top: bool = True,
    ) -> None:
        """``weights``: a URL or .pth file of torchvision's VGG-16 state dict (e.g.
        `IMAGENET_WEIGHTS`), or None for torchvision's random initialisation under ``seed``.
        ``resolution``: side images are resized to, or None to keep theirs. ``top=False``:
        drop the ImageNet classifier after loading (a backbone for new heads; saves 0.5 GB
        per VGG-16 copy), leaving `pooled_features` and `representation`."""
        super().__init__()
        if resolution is not None and resolution < MIN_SIZE:
            raise ValueError(f"resolution must be >= {MIN_SIZE} or None, got {resolution}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.resolution = resolution
        with seeded(seed):
            self.features = _features()
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(4096, 1000),
            )
            _initialise(self)
        if weights is not None:
            load_weights(self, weights)
        if not top:  # a backbone: its ImageNet classifier is never used, so it is not kept
            self.classifier = None

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits ``[n, 1000]``, as torchvision's model computes them."""
        maps = self.features(self._prepared(x))
        return self.classifier(self.avgpool(maps).flatten(1))

    def pooled_features(self, x: Tensor) -> Tensor:
        return self.representation(x, "pooled")

    def check_inputs(self, splits: Splits) -> None:
        """Grey or colour images, at least 32×32 once resized (five poolings)."""
        check_images(splits, "VGG16", MIN_SIZE, self.resolution)

    def representation(self, x: Tensor, layer: str) -> Tensor:
        check_layer(layer, self.layers)
        return activation_at(self._activations(x), layer)

    def _activations(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        yield "input", x
        h, block = self._prepared(x), 0
        for module in self.features:
            h = module(h)
            if isinstance(module, nn.MaxPool2d):
                block += 1
                yield f"block{block}", h
        yield "pooled", h.mean((2, 3))

    def _prepared(self, x: Tensor) -> Tensor:
        x = resized(rgb(x), self.resolution)
        check_resolution(x, MIN_SIZE, "VGG16")
        return torchvision_scale(x)


def _features() -> nn.Sequential:
    """The convolution stack; each convolution is followed by a ReLU, so the convolutions sit
    at the indices torchvision's state dict names."""
    modules: list[nn.Module] = []
    channels = 3
    for item in CONFIG:
        if item == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            modules += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*modules)


def _initialise(model: nn.Module) -> None:
    """torchvision's VGG initialisation: He-normal (fan-out) convolutions, N(0, 0.01) linear
    layers, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
