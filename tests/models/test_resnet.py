import pytest
import torch

from subpop_runner.models.network import Backbone
from subpop_runner.models.resnet import ResNet50
from subpop_runner.models.weights import load_weights

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_keys() -> list[str]:
    """torchvision's resnet50: Bottleneck blocks [3, 4, 6, 3]; each registers conv1, bn1,
    conv2, bn2, conv3, bn3 and, in a stage's first block, downsample = (conv1x1, BatchNorm)."""
    keys = ["conv1.weight", *(f"bn1.{p}" for p in BN)]
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        for b in range(blocks):
            prefix = f"layer{stage}.{b}"
            for i in (1, 2, 3):
                keys += [f"{prefix}.conv{i}.weight", *(f"{prefix}.bn{i}.{p}" for p in BN)]
            if b == 0:
                keys += [
                    f"{prefix}.downsample.0.weight",
                    *(f"{prefix}.downsample.1.{p}" for p in BN),
                ]
    return keys + ["fc.weight", "fc.bias"]


@pytest.fixture(scope="module")
def resnet():
    return ResNet50().eval()


def test_state_dict_is_torchvisions():
    with torch.device("meta"):
        state = ResNet50().state_dict()
    assert list(state) == torchvision_keys()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer1.0.conv1.weight"] == (64, 64, 1, 1)
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["layer2.0.conv2.weight"] == (128, 128, 3, 3)  # v1.5: the 3×3 strides
    assert shapes["layer3.5.conv3.weight"] == (1024, 256, 1, 1)
    assert shapes["layer4.0.downsample.1.running_var"] == (2048,)
    assert shapes["layer4.2.bn3.num_batches_tracked"] == ()
    assert shapes["fc.weight"] == (1000, 2048)
    # torchvision's published ResNet50_Weights.IMAGENET1K_V1 metadata: num_params
    params = sum(v.numel() for k, v in state.items() if not k.endswith(BN[2:]))
    assert params == 25_557_032


def test_downsampling_is_in_the_3x3_convolution(resnet):
    assert resnet.layer2[0].conv1.stride == (1, 1)
    assert resnet.layer2[0].conv2.stride == (2, 2)


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_logits_and_representations(channels, size):
    side = size // 4  # stride-2 stem conv and max pool; then each stage after the first halves
    dims = {
        "input": channels * size * size,
        "layer1": 256 * side**2,
        "layer2": 512 * ((side + 1) // 2) ** 2,
        "layer3": 1024 * ((side + 3) // 4) ** 2,
        "layer4": 2048 * ((side + 7) // 8) ** 2,
        "pooled": 2048,
    }
    with torch.device("meta"):  # shapes only: the values are checked below
        model = ResNet50()
        x = torch.zeros(2, channels, size, size)
        assert model(x).shape == (2, 1000)
        assert model.layers == tuple(dims)
        for layer, d in dims.items():
            assert model.representation(x, layer).shape == (2, d)


def test_pooled_features_of_grey_images_are_those_of_their_rgb_copies(resnet):
    x = torch.rand(2, 1, 28, 28) - 0.5
    with torch.no_grad():
        pooled = resnet.pooled_features(x)
        assert pooled.shape == (2, resnet.n_features)
        assert torch.allclose(pooled, resnet.pooled_features(x.expand(-1, 3, -1, -1)))


def test_logits_are_fc_of_the_pooled_features(resnet):
    x = torch.rand(2, 3, 32, 32) - 0.5
    with torch.no_grad():
        assert torch.allclose(resnet(x), resnet.fc(resnet.pooled_features(x)))


def test_published_state_dict_loads_through_the_constructor(tmp_path):
    source = ResNet50(seed=1)
    path = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), path)
    loaded = ResNet50(weights=path, seed=2)
    assert torch.equal(loaded.layer4[2].conv3.weight, source.layer4[2].conv3.weight)
    assert torch.equal(loaded.bn1.running_var, source.bn1.running_var)
    load_weights(loaded, path)  # the same file again: still fits


def test_unknown_layer_names_the_valid_ones(resnet):
    with pytest.raises(ValueError, match="layer4, pooled; got 'avgpool'"):
        resnet.representation(torch.zeros(1, 3, 32, 32), "avgpool")


def test_is_a_backbone(resnet):
    assert isinstance(resnet, Backbone)
