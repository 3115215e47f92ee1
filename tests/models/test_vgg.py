import pytest
import torch

from subpop_runner.models.network import Backbone
from subpop_runner.models.vgg import VGG16

# torchvision's vgg16 (configuration "D"): `make_layers` appends conv + ReLU per channel entry
# and one MaxPool per "M", so convolutions sit at these indices of `features`; the classifier
# is Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
CONVS = {
    0: (3, 64), 2: (64, 64),
    5: (64, 128), 7: (128, 128),
    10: (128, 256), 12: (256, 256), 14: (256, 256),
    17: (256, 512), 19: (512, 512), 21: (512, 512),
    24: (512, 512), 26: (512, 512), 28: (512, 512),
}  # fmt: skip
LINEARS = {0: (25088, 4096), 3: (4096, 4096), 6: (4096, 1000)}


def torchvision_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for i, (c_in, c_out) in CONVS.items():
        shapes[f"features.{i}.weight"] = (c_out, c_in, 3, 3)
        shapes[f"features.{i}.bias"] = (c_out,)
    for i, (n_in, n_out) in LINEARS.items():
        shapes[f"classifier.{i}.weight"] = (n_out, n_in)
        shapes[f"classifier.{i}.bias"] = (n_out,)
    return shapes


@pytest.fixture(scope="module")
def vgg():
    """Resizing to 32×32, the smallest side five 2×2 poolings allow: the fastest VGG."""
    return VGG16(resolution=32).eval()


def test_state_dict_is_torchvisions():
    with torch.device("meta"):  # shapes without allocating 138M weights
        model = VGG16()
    state = model.state_dict()
    expected = torchvision_shapes()
    assert list(state) == list(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    # torchvision's published VGG16_Weights.IMAGENET1K_V1 metadata: num_params
    assert sum(v.numel() for v in state.values()) == 138_357_544


def test_logits_and_representations_on_small_colour_images(vgg):
    x = torch.rand(2, 3, 32, 32) - 0.5
    with torch.no_grad():
        assert vgg(x).shape == (2, 1000)
        assert vgg.layers == ("input", "block1", "block2", "block3", "block4", "block5", "pooled")
        dims = [3 * 32 * 32, 64 * 16**2, 128 * 8**2, 256 * 4**2, 512 * 2**2, 512, 512]
        for layer, d in zip(vgg.layers, dims, strict=True):
            assert vgg.representation(x, layer).shape == (2, d)


def test_pooled_features_are_512_wide_at_any_size():
    with torch.device("meta"):  # shapes only
        model = VGG16()
        for size in (32, 64, 100):
            assert model.pooled_features(torch.zeros(2, 3, size, size)).shape == (2, 512)
    assert model.n_features == 512


def test_pooled_features_average_the_last_pool(vgg):
    x = torch.rand(2, 3, 32, 32) - 0.5
    with torch.no_grad():  # at 32×32 the last pool is 1×1: its average is itself
        assert torch.equal(vgg.pooled_features(x), vgg.representation(x, "block5"))


def test_grey_28x28_images_are_resized_and_repeated_to_rgb(vgg):
    x = torch.rand(2, 1, 28, 28) - 0.5
    with torch.no_grad():
        assert vgg.pooled_features(x).shape == (2, 512)
        assert torch.allclose(vgg(x), vgg(x.expand(-1, 3, -1, -1)))


def test_images_too_small_for_five_poolings_need_a_resolution():
    with torch.device("meta"), pytest.raises(ValueError, match="at least 32×32, got 28×28"):
        VGG16()(torch.zeros(2, 1, 28, 28))


def test_unknown_layer_names_the_valid_ones(vgg):
    with pytest.raises(ValueError, match="block4, block5, pooled; got 'fc7'"):
        vgg.representation(torch.zeros(1, 3, 32, 32), "fc7")


def test_is_a_backbone(vgg):
    assert isinstance(vgg, Backbone)


def test_too_small_resolution_is_rejected():
    with pytest.raises(ValueError, match="resolution must be >= 32 or None, got 28"):
        VGG16(resolution=28)


@pytest.mark.slow
def test_a_backbone_without_its_top_keeps_its_pooled_features():
    full = VGG16(seed=3).eval()
    backbone = VGG16(seed=3, top=False).eval()
    assert backbone.classifier is None
    x = torch.rand(2, 3, 32, 32) - 0.5
    with torch.no_grad():
        assert torch.equal(full.pooled_features(x), backbone.pooled_features(x))
    assert sum(p.numel() for p in backbone.parameters()) == 14_714_688
