import pytest
import torch

from subpop_runner.models.conv import Conv
from subpop_runner.models.network import Classifier


@pytest.mark.parametrize(
    ("channels", "size", "dims"),
    [
        # pool_s: 2·32·2^s channels at size/2^(s+1); penultimate: 10 classes at size/8
        (1, 28, {"pool0": 64 * 14 * 14, "pool1": 128 * 7 * 7, "pool2": 256 * 3 * 3}),
        (3, 32, {"pool0": 64 * 16 * 16, "pool1": 128 * 8 * 8, "pool2": 256 * 4 * 4}),
    ],
)
def test_logits_and_representations_have_the_expected_shapes(channels, size, dims):
    model = Conv(input_shape=(channels, size, size), n_classes=10)
    x = torch.rand(3, channels, size, size) - 0.5
    assert model(x).shape == (3, 10)
    side = size // 8
    expected = {"input": channels * size * size, **dims, "penultimate": 10 * side * side}
    assert model.layers == tuple(expected)
    for layer, d in expected.items():
        assert model.representation(x, layer).shape == (3, d)


def test_parameter_count_is_that_of_the_authors_keras_model():
    # Keras's summary of the released CIFAR-10 model: 3→32 stem, scales 32→32→64, 64→64→128,
    # 128→128→256 (3×3 kernels with biases), 256→10 conv, dense 4·4·10 → 10.
    convs = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 10)]
    expected = sum(9 * a * b + b for a, b in convs) + 160 * 10 + 10
    model = Conv(input_shape=(3, 32, 32), n_classes=10)
    assert sum(p.numel() for p in model.parameters()) == expected == 606836


def test_width_scales_every_convolution():
    model = Conv(input_shape=(1, 28, 28), n_classes=10, width=8)
    x = torch.zeros(2, 1, 28, 28)
    assert model.representation(x, "pool2").shape == (2, 64 * 3 * 3)


def test_utkface_sized_images_pool_to_12x12():
    model = Conv(input_shape=(3, 100, 100), n_classes=2, width=4)
    x = torch.zeros(2, 3, 100, 100)
    assert model(x).shape == (2, 2)
    assert model.representation(x, "penultimate").shape == (2, 2 * 12 * 12)


def test_logits_are_the_dense_layer_of_the_penultimate_representation():
    model = Conv(input_shape=(1, 28, 28), n_classes=10, width=4)
    x = torch.rand(2, 1, 28, 28) - 0.5
    expected = model.dense(model.representation(x, "penultimate"))
    assert torch.equal(model(x), expected)


def test_unknown_layer_names_the_valid_ones():
    model = Conv(input_shape=(1, 28, 28), n_classes=10, width=4)
    with pytest.raises(ValueError, match="input, pool0, pool1, pool2, penultimate; got 'fc'"):
        model.representation(torch.zeros(1, 1, 28, 28), "fc")


def test_same_seed_same_network_and_outputs():
    x = torch.rand(4, 3, 32, 32) - 0.5
    first, second = (Conv(input_shape=(3, 32, 32), n_classes=10, seed=7) for _ in range(2))
    other = Conv(input_shape=(3, 32, 32), n_classes=10, seed=8)
    assert torch.equal(first(x), second(x))
    assert not torch.equal(first(x), other(x))


def test_seed_leaves_the_global_generator_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    Conv(input_shape=(1, 28, 28), n_classes=10, width=4)
    assert torch.equal(torch.rand(3), expected)


def test_starts_from_keras_defaults():
    model = Conv(input_shape=(3, 32, 32), n_classes=10)
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if hasattr(m, "bias"))
    limit = (6 / (9 * 3 + 9 * 32)) ** 0.5  # Glorot-uniform bound of the stem's 3×3×3→32 kernel
    assert model.stem[0].weight.abs().max() <= limit


def test_is_a_network():
    assert isinstance(Conv(input_shape=(1, 28, 28), n_classes=10, width=4), Classifier)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"input_shape": (1, 4, 4)}, "image_size must be >= 8, got 4"),
        ({"n_classes": 1}, "n_classes >= 2"),
        ({"width": 0}, "width must be >= 1"),
    ],
)
def test_rejects_invalid_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        Conv(**{"input_shape": (1, 28, 28), "n_classes": 10, **settings})
