"""Turning the runner's images into what a network pretrained on ImageNet was trained on.

The runner's pixels are ``x / 255 - 0.5`` with 1 or 3 channels at the dataset's size. ImageNet
networks take 3 channels, and each published set of weights expects its own pixel scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from subpop_runner.errors import ConfigError

if TYPE_CHECKING:
    from subpop_runner.types import Splits

# torchvision's ImageNet weights take RGB in [0, 1] standardised with these per-channel values.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def rgb(x: Tensor) -> Tensor:
    """Grey images ``[n, 1, H, W]`` repeated to 3 channels; colour images unchanged."""
    if x.shape[1] == 3:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    raise ValueError(f"images must have 1 or 3 channels, got {x.shape[1]}")


def resized(x: Tensor, resolution: int | None) -> Tensor:
    """``x`` resized to ``resolution × resolution`` (bilinear, antialiased when shrinking);
    unchanged for None or when it already has that size."""
    if resolution is None or tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)


def torchvision_scale(x: Tensor) -> Tensor:
    """Runner pixels to torchvision's ImageNet standardisation ``(x/255 - mean) / std``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x + 0.5 - mean) / std


def check_resolution(x: Tensor, minimum: int, network: str) -> None:
    """ValueError when images are too small for ``network``'s downsampling."""
    if min(x.shape[-2:]) < minimum:
        size = "×".join(str(s) for s in x.shape[-2:])
        raise ValueError(
            f"{network} needs images of at least {minimum}×{minimum}, got {size}; "
            "set its resolution to resize them"
        )


def check_images(
    splits: Splits,
    network: str,
    minimum: int = 1,
    resolution: int | None = None,
    channels: tuple[int, ...] | None = (1, 3),
) -> None:
    """`ConfigError` unless the data are images ``(C, H, W)`` ``network`` reads: ``channels``
    planes (None: any), at least ``minimum`` pixels a side once resized to ``resolution``.
    Checked before any training: a table or token ids would otherwise reach the first
    convolution (or a 47-channel "image") and fail mid-run."""
    shape = splits.input_shape
    if splits.vocabulary is not None or len(shape) != 3:
        given = "token ids" if splits.vocabulary is not None else f"rows of {shape[-1]} features"
        raise ConfigError(
            f"{network} reads images (channels × height × width), and this dataset gives "
            f"{given}; use an image dataset (dataset=fashion_mnist, cifar10 or utkface) or a "
            "model for these data (model=mlp for tables, bert_ll, bert_ft or bert_head for text)"
        )
    if channels is not None and shape[0] not in channels:
        raise ConfigError(
            f"{network} reads images with {' or '.join(map(str, channels))} channels, got "
            f"{shape[0]}"
        )
    side = resolution or min(shape[1:])
    if side < minimum:
        raise ConfigError(
            f"{network} needs images of at least {minimum}×{minimum}, got "
            f"{'×'.join(map(str, shape[1:]))}"
            + ("; set its resolution to resize them" if resolution is None else "")
        )
