"""ResNet-50 (He et al. 2016), whose ImageNet embeddings the paper clusters for ClusterMatch
against CIFAR-10 + VGG-FT (Sec. 5.5, Table 15 of the CCS version).

Module names follow torchvision's ``resnet50`` (``conv1``, ``bn1``, ``layer1..4.<block>.conv1
/ bn1 / conv2 / bn2 / conv3 / bn3 / downsample.0 / downsample.1``, ``fc``), so its published
ImageNet state dict (`IMAGENET_WEIGHTS`) loads unchanged. As in torchvision (the "v1.5"
variant), a block that downsamples does so in its 3×3 convolution.

Images are converted to what the torchvision weights expect: 3 channels, ImageNet
standardisation, optionally resized to ``resolution``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from subpop_runner.models.inputs import check_images, resized, rgb, torchvision_scale
from subpop_runner.models.network import Backbone, activation_at, check_layer, seeded
from subpop_runner.models.weights import load_weights
from subpop_runner.types import Splits

IMAGENET_WEIGHTS = "https://download.pytorch.org/models/resnet50-0676ba61.pth"

BLOCKS_PER_STAGE = (3, 4, 6, 3)
EXPANSION = 4  # a bottleneck block outputs 4× its inner width


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided when downsampling), 1×1 expand, each batch-normalised; the
    input is added back, through a strided 1×1 projection where the shape changes."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class ResNet50(Backbone):
    """ResNet-50 with torchvision's module names; layers after each stage ("layer1".."layer4")
    and the globally averaged last one ("pooled", 2048-d)."""

    layers = ("input", "layer1", "layer2", "layer3", "layer4", "pooled")
    n_features = 512 * EXPANSION

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None = None,
        resolution: int | None = None,
        seed: int = 0,
        top: bool = True,
    ) -> None:
        """``weights``: a URL or .pth file of torchvision's ResNet-50 state dict (e.g.
        `IMAGENET_WEIGHTS`), or None for torchvision's random initialisation under ``seed``.
        ``resolution``: side images are resized to, or None to keep theirs. ``top=False``:
        drop the ImageNet classifier after loading (a backbone for new heads; saves 0.5 GB
        per VGG-16 copy), leaving `pooled_features` and `representation`."""
        super().__init__()
        if resolution is not None and resolution < 1:
            raise ValueError(f"resolution must be >= 1 or None, got {resolution}")
        self.resolution = resolution
        with seeded(seed):
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            channels = 64
            for stage, blocks in enumerate(BLOCKS_PER_STAGE):
                width = 64 * 2**stage
                first_stride = 1 if stage == 0 else 2
                stack = []
                for b in range(blocks):
                    stack.append(Bottleneck(channels, width, first_stride if b == 0 else 1))
                    channels = width * EXPANSION
                setattr(self, f"layer{stage + 1}", nn.Sequential(*stack))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(channels, 1000)
            _initialise(self)
        if weights is not None:
            load_weights(self, weights)
        if not top:  # a backbone: its ImageNet classifier is never used, so it is not kept
            self.fc = None

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits ``[n, 1000]``."""
        return self.fc(self.pooled_features(x))

    def pooled_features(self, x: Tensor) -> Tensor:
        return self.representation(x, "pooled")

    def check_inputs(self, splits: Splits) -> None:
        """Grey or colour images of any size (it pools globally)."""
        check_images(splits, "ResNet50", resolution=self.resolution)

    def representation(self, x: Tensor, layer: str) -> Tensor:
        check_layer(layer, self.layers)
        return activation_at(self._activations(x), layer)

    def _activations(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        yield "input", x
        h = torchvision_scale(resized(rgb(x), self.resolution))
        h = self.maxpool(torch.relu(self.bn1(self.conv1(h))))
        for stage in range(1, len(BLOCKS_PER_STAGE) + 1):
            h = getattr(self, f"layer{stage}")(h)
            yield f"layer{stage}", h
        yield "pooled", self.avgpool(h)


def _initialise(model: nn.Module) -> None:
    """torchvision's ResNet initialisation: He-normal (fan-out) convolutions; batch norms
    (identity) and the final linear layer keep PyTorch's defaults."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
