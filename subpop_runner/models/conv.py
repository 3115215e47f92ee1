"""Conv: the paper's small CNN for CIFAR-10 (Sec. 5.1), as the authors' released code builds it.

Conv(width) + LeakyReLU(0.1), then three scales s = 0, 1, 2 of
[Conv(width·2^s), LeakyReLU, Conv(2·width·2^s), LeakyReLU, AvgPool 2], then Conv(n_classes),
flatten, and a dense layer to n_classes (softmax in the loss). All convolutions are 3×3 with
'same' padding; pooling floors odd sizes, as Keras's 'valid' pooling does.

The paper's text ends with "a final convolution and mean pooling layer"; the released code has
that mean pool commented out and flattens into a dense layer instead, which is what runs here.
There is no activation between the final convolution and the dense layer, as in that code.
Weights start as Keras's defaults (Glorot-uniform kernels, zero biases), as the authors' did.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

from subpop_runner.models.network import Classifier, activation_at, check_layer, seeded

SCALES = 3


class Conv(Classifier):
    """The paper's Conv; representation layers after each scale's pooling ("pool0".."pool2")
    and the flattened input of the dense layer ("penultimate")."""

    layers = ("input", *(f"pool{s}" for s in range(SCALES)), "penultimate")
    penultimate = "penultimate"

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        n_classes: int,
        width: int = 32,
        seed: int = 0,
    ) -> None:
        """``input_shape``: one image's ``(C, H, W)``, square."""
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"Conv reads images (C, H, W), got rows of shape {input_shape}")
        in_channels, image_size = input_shape[0], input_shape[-1]
        if in_channels < 1 or n_classes < 2 or width < 1:
            raise ValueError(
                f"in_channels and width must be >= 1 and n_classes >= 2, got "
                f"{in_channels}, {width}, {n_classes}"
            )
        if image_size < 2**SCALES:
            raise ValueError(f"image_size must be >= {2**SCALES}, got {image_size}")
        with seeded(seed):
            self.stem = nn.Sequential(_conv(in_channels, width), nn.LeakyReLU(0.1))
            # Scale s takes width·2^s channels (the stem's, or the previous scale's output).
            self.scales = nn.ModuleList(_scale(width * 2**s) for s in range(SCALES))
            self.to_classes = _conv(width * 2**SCALES, n_classes)
            side = image_size // 2**SCALES
            self.dense = nn.Linear(n_classes * side * side, n_classes)
            _glorot(self.dense)

    @property
    def classifier(self) -> nn.Linear:
        return self.dense

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(self.representation(x, "penultimate"))

    def representation(self, x: Tensor, layer: str) -> Tensor:
        check_layer(layer, self.layers)
        return activation_at(self._activations(x), layer)

    def _activations(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        yield "input", x
        x = self.stem(x)
        for s, scale in enumerate(self.scales):
            x = scale(x)
            yield f"pool{s}", x
        yield "penultimate", self.to_classes(x)


def _scale(channels: int) -> nn.Sequential:
    """One scale: two convolutions (``channels``, then twice as many) and a 2×2 average pool."""
    return nn.Sequential(
        _conv(channels, channels),
        nn.LeakyReLU(0.1),
        _conv(channels, 2 * channels),
        nn.LeakyReLU(0.1),
        nn.AvgPool2d(2),
    )


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return _glorot(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))


def _glorot(layer: nn.Conv2d | nn.Linear) -> nn.Conv2d | nn.Linear:
    """Keras's default initialisation: Glorot-uniform weights, zero bias."""
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer
