import argparse
import hashlib
import re

import pytest
import torch

from subpop_runner.errors import ConfigError
from subpop_runner.models.conv import Conv
from subpop_runner.models.weights import load_weights, read_state_dict


def small(seed: int = 0, width: int = 4) -> Conv:
    return Conv(input_shape=(1, 28, 28), n_classes=10, width=width, seed=seed)


def save_published(model: torch.nn.Module, folder, stem: str = "conv"):
    """The state dict saved as torchvision names its files: ``<stem>-<first SHA-256 digits>``."""
    plain = folder / "plain.pth"
    torch.save(model.state_dict(), plain)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    return plain.rename(folder / f"{stem}-{digest[:8]}.pth")


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), key


def test_round_trip_through_a_local_file(tmp_path):
    source, target = small(seed=1), small(seed=2)
    path = tmp_path / "conv.pth"
    torch.save(source.state_dict(), path)
    load_weights(target, path)
    assert_same_weights(source, target)


def test_file_whose_name_carries_its_hash_loads(tmp_path):
    source, target = small(seed=1), small(seed=2)
    load_weights(target, save_published(source, tmp_path))
    assert_same_weights(source, target)


def test_hash_mismatch_is_a_config_error(tmp_path):
    path = tmp_path / "conv-0123abcd.pth"
    torch.save(small().state_dict(), path)
    with pytest.raises(ConfigError, match=r"conv-0123abcd.pth has SHA-256 \w+…, not the 0123abcd"):
        read_state_dict(path)


def test_url_is_downloaded_once_into_the_cache_and_checked(tmp_path):
    source, target = small(seed=1), small(seed=2)
    published = save_published(source, tmp_path)
    cache = tmp_path / "cache"
    load_weights(target, published.as_uri(), cache_dir=cache)  # file:// stands in for https://
    assert_same_weights(source, target)
    assert [p.name for p in cache.iterdir()] == [published.name]


def test_download_with_the_wrong_hash_is_deleted(tmp_path):
    path = tmp_path / "conv-0123abcd.pth"
    torch.save(small().state_dict(), path)
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match="the download of file://.* has SHA-256"):
        read_state_dict(path.as_uri(), cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_unreachable_url_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="could not download file://.*; download it elsewhere"):
        read_state_dict((tmp_path / "absent-0123abcd.pth").as_uri(), cache_dir=tmp_path)


def test_missing_file_names_the_fix(tmp_path):
    message = re.escape(f"model weights: {tmp_path / 'vgg.pth'} not found; give a local .pth")
    with pytest.raises(ConfigError, match=message + ".*null for random init"):
        read_state_dict(tmp_path / "vgg.pth")


def test_keys_of_another_architecture_are_listed(tmp_path):
    path = tmp_path / "other.pth"
    state = small().state_dict()
    del state["dense.bias"]
    torch.save({**state, "fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ConfigError) as error:
        load_weights(small(), path)
    message = str(error.value)
    assert "\n" not in message
    assert "1 missing keys (dense.bias)" in message
    assert "1 unexpected keys (fc.weight)" in message


def test_shapes_of_another_width_are_listed(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(small(width=8).state_dict(), path)
    with pytest.raises(ConfigError, match=r"stem.0.weight \[8, 1, 3, 3\] vs \[4, 1, 3, 3\]"):
        load_weights(small(width=4), path)


def test_pickled_objects_are_refused(tmp_path):
    """weights_only: a file that would rebuild arbitrary Python objects is not unpickled."""
    path = tmp_path / "pickled.pth"
    torch.save({"weight": torch.zeros(1), "settings": argparse.Namespace(lr=1)}, path)
    with pytest.raises(ConfigError, match="holds argparse.Namespace, which weights_only"):
        read_state_dict(path)


def test_a_file_torch_cannot_read_is_a_config_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_text("not a torch file")
    with pytest.raises(ConfigError, match="junk.pth is not a readable state dict"):
        read_state_dict(path)


def test_a_whole_checkpoint_is_not_a_state_dict(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": small().state_dict()}, path)
    with pytest.raises(ConfigError, match="not a state dict of tensors; save model.state_dict"):
        read_state_dict(path)
