"""Transfer victims: a pretrained backbone and a new linear head on its pooled features.

The paper's VGG-LL trains the head alone, VGG-FT every layer (Sec. 5.1); ``trainable`` chooses
("head" or "all"). With the head alone, the backbone also stays in inference mode while
training: its batch norms keep their ImageNet statistics and dropout stays off, as Keras does
for layers marked ``trainable = False`` in the authors' code. The head starts as Keras's Dense
layer does (Glorot-uniform weights, zero bias); its L2 penalty (0.01 in the paper) belongs to
the training recipe.
"""

from __future__ import annotations

from torch import Tensor, nn

from subpop_runner.models.network import Backbone, Classifier, check_layer, seeded
from subpop_runner.types import Splits

TRAINABLE = ("head", "all")


class Transfer(Backbone, Classifier):
    """``backbone`` plus a linear head; layers are the backbone's and "logits"."""

    penultimate = "pooled"

    def __init__(
        self,
        *,
        backbone: Backbone,
        n_classes: int,
        trainable: str = "head",
        seed: int = 0,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        """``input_shape`` is accepted as every network's is; the backbone resizes images."""
        super().__init__()
        if trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}; got {trainable!r}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.backbone = backbone
        self.trainable = trainable
        self.n_features = backbone.n_features
        self.layers = (*backbone.layers, "logits")
        with seeded(seed):
            self.head = nn.Linear(backbone.n_features, n_classes)
            nn.init.xavier_uniform_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.backbone.requires_grad_(trainable == "all")
        self.train()

    def train(self, mode: bool = True) -> Transfer:
        super().train(mode)
        if self.trainable == "head":
            self.backbone.eval()
        return self

    @property
    def classifier(self) -> nn.Linear:
        return self.head

    def check_inputs(self, splits: Splits) -> None:
        """The backbone's."""
        self.backbone.check_inputs(splits)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pooled_features(x))

    def pooled_features(self, x: Tensor) -> Tensor:
        return self.backbone.pooled_features(x)

    def representation(self, x: Tensor, layer: str) -> Tensor:
        check_layer(layer, self.layers)
        if layer == "logits":
            return self(x)
        return self.backbone.representation(x, layer)
