import pytest
import torch
from torch import nn

from subpop_runner.models.efficientnet_lite import EfficientNetLite0
from subpop_runner.models.network import Backbone
from subpop_runner.models.transfer import Transfer


class TinyBackbone(Backbone):
    """Conv, batch norm, dropout, global average: what the Transfer rules touch."""

    layers = ("input", "maps", "pooled")
    n_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.dropout = nn.Dropout(0.5)

    def maps(self, x):
        return self.dropout(self.norm(self.conv(x)))

    def pooled_features(self, x):
        return self.maps(x).mean((2, 3))

    def representation(self, x, layer):
        return {"input": x, "maps": self.maps(x), "pooled": self.pooled_features(x)}[
            layer
        ].flatten(1)

    def forward(self, x):
        return self.pooled_features(x)


def test_layers_are_the_backbones_and_logits():
    model = Transfer(backbone=TinyBackbone(), n_classes=3)
    x = torch.rand(5, 3, 8, 8) - 0.5
    assert model.layers == ("input", "maps", "pooled", "logits")
    assert model.n_features == 4
    assert model(x).shape == model.representation(x, "logits").shape == (5, 3)
    assert model.representation(x, "maps").shape == (5, 4 * 8 * 8)
    assert model.pooled_features(x).shape == (5, 4)


def test_head_only_freezes_the_backbone_in_inference_mode():
    model = Transfer(backbone=TinyBackbone(), n_classes=3, trainable="head").train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    assert model.training and model.head.training and not model.backbone.training
    before = model.backbone.norm.running_mean.clone()
    x = torch.rand(6, 3, 8, 8)
    assert torch.equal(model(x), model(x))  # no dropout
    assert torch.equal(model.backbone.norm.running_mean, before)  # batch norm statistics kept


def test_all_trains_every_layer():
    model = Transfer(backbone=TinyBackbone(), n_classes=3, trainable="all").train()
    assert all(p.requires_grad for p in model.parameters())
    assert model.backbone.training
    model.eval()
    assert not model.backbone.training


def test_head_is_seeded_and_starts_as_keras_dense():
    first, second = (Transfer(backbone=TinyBackbone(), n_classes=3, seed=5) for _ in range(2))
    assert torch.equal(first.head.weight, second.head.weight)
    assert torch.count_nonzero(first.head.bias) == 0
    assert first.head.weight.abs().max() <= (6 / (4 + 3)) ** 0.5  # Glorot-uniform bound


def test_unknown_layer_names_the_valid_ones():
    model = Transfer(backbone=TinyBackbone(), n_classes=3)
    with pytest.raises(ValueError, match="input, maps, pooled, logits; got 'fc'"):
        model.representation(torch.zeros(1, 3, 8, 8), "fc")


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"trainable": "last"}, "trainable must be one of head, all"), ({"n_classes": 1}, ">= 2")],
)
def test_rejects_invalid_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        Transfer(**{"backbone": TinyBackbone(), "n_classes": 3, **settings})


def test_pretrained_efficientnet_with_a_new_head():
    model = Transfer(backbone=EfficientNetLite0(resolution=32), n_classes=10).train()
    x = torch.rand(4, 1, 28, 28) - 0.5
    logits = model(x)
    logits.sum().backward()
    assert logits.shape == (4, 10)
    assert model.head.weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())
    assert isinstance(model, Backbone)
