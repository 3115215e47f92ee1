import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from subpop_runner.data import fashion_mnist
from subpop_runner.data.fashion_mnist import FashionMNIST, read_idx
from subpop_runner.errors import ConfigError

N_TRAIN, N_TEST = 40, 12


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An idx file: big-endian magic number, one big-endian size per dimension, the bytes."""
    return struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.tobytes()


def write_fashion(folder: Path, seed: int = 0) -> Path:
    """The four gzipped idx files, tiny. Every image is distinct: its first pixels hold its
    number (test images from 1000 on), the rest is noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for part, n, first in (("train", N_TRAIN, 0), ("t10k", N_TEST, 1000)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, :2] = np.array([divmod(first + i, 256) for i in range(n)], dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, array, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
            data = gzip.compress(idx_bytes(array, magic))
            (folder / f"{part}-{kind}-ubyte.gz").write_bytes(data)
    return folder


@pytest.fixture
def fashion_dir(tmp_path: Path) -> Path:
    return write_fashion(tmp_path / "fashion")


@pytest.fixture
def published_fake(fashion_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny files stand in for the published ones (content MD5s, counts, .gz MD5s)."""
    files = {name: fashion_dir / name for name in fashion_mnist.GZ_MD5}

    def md5(data: bytes) -> str:
        return hashlib.md5(data).hexdigest()

    monkeypatch.setattr(
        fashion_mnist,
        "CONTENT_MD5",
        {n: md5(gzip.decompress(p.read_bytes())) for n, p in files.items()},
    )
    monkeypatch.setattr(
        fashion_mnist, "GZ_MD5", {n: md5(p.read_bytes()) for n, p in files.items()}
    )
    monkeypatch.setattr(fashion_mnist, "ROWS", {"train": N_TRAIN, "t10k": N_TEST})
    return fashion_dir


def image_ids(x: np.ndarray) -> set[int]:
    """The numbers written into the first pixels, read back from the scaled images."""
    pixels = np.rint((x[:, 0, 0, :2] + 0.5) * 255).astype(int)
    return set((pixels[:, 0] * 256 + pixels[:, 1]).tolist())


def test_train_set_halved_and_test_set_whole_disjoint(published_fake):
    splits = FashionMNIST(data_dir=str(published_fake)).load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (20, 20, 12)
    train, aux, test = (image_ids(p.x) for p in (splits.train, splits.aux, splits.test))
    assert train | aux == set(range(N_TRAIN)) and not train & aux
    assert test == set(range(1000, 1000 + N_TEST))
    assert splits.class_names == fashion_mnist.CLASS_NAMES and splits.n_classes == 10
    assert splits.train.annotations is None


def test_pixels_scaled_as_the_authors_channels_first(fashion_dir):
    splits = FashionMNIST(data_dir=str(fashion_dir), verify=False).load(seed=0)
    raw = read_idx(
        "t10k-images-idx3-ubyte.gz", fashion_dir / "t10k-images-idx3-ubyte.gz", verify=False
    )
    assert splits.test.x.shape == (N_TEST, 1, 28, 28) and splits.test.x.dtype == np.float32
    assert np.allclose(splits.test.x[:, 0], raw / 255 - 0.5, atol=1e-6)  # float32
    assert splits.test.y.dtype == np.int64


def test_same_seed_same_split_other_seed_other_split(fashion_dir):
    first, again, other = (
        FashionMNIST(data_dir=str(fashion_dir), verify=False).load(seed=s) for s in (3, 3, 4)
    )
    assert np.array_equal(first.train.x, again.train.x) and np.array_equal(
        first.aux.y, again.aux.y
    )
    assert image_ids(first.train.x) != image_ids(other.train.x)


def test_max_rows_gives_each_part_a_third_sampled_with_the_seed(fashion_dir):
    first, again, other = (
        FashionMNIST(data_dir=str(fashion_dir), verify=False, max_rows=30).load(seed=s)
        for s in (0, 0, 1)
    )
    assert (len(first.train), len(first.aux), len(first.test)) == (10, 10, 10)
    assert not image_ids(first.train.x) & image_ids(first.aux.x)
    assert np.array_equal(first.test.x, again.test.x)
    assert image_ids(first.test.x) != image_ids(other.test.x)


def test_own_files_fail_verification_with_the_fix(fashion_dir):
    with pytest.raises(ConfigError, match="is not the published Fashion-MNIST file") as error:
        FashionMNIST(data_dir=str(fashion_dir)).load(seed=0)
    message = str(error.value)
    assert "train-images-idx3-ubyte.gz" in message and "expected 60,000 rows" in message
    assert "found 40 rows" in message and "dataset.verify=false" in message


def test_one_changed_byte_fails_verification(published_fake):
    path = published_fake / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] = (content[-1] + 1) % 10
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(ConfigError, match=r"t10k-labels-idx1-ubyte.gz .* content MD5"):
        FashionMNIST(data_dir=str(published_fake)).load(seed=0)
    FashionMNIST(data_dir=str(published_fake), verify=False).load(seed=0)


def rewrite(path: Path, change) -> None:
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


# Each damage to a file, and what its error must say: checked with and without verify.
DAMAGE = {
    "truncated gzip": (
        "train-images-idx3-ubyte.gz",
        lambda path: path.write_bytes(path.read_bytes()[:-100]),
        "expected a complete gzip file, found Compressed file ended",
    ),
    "garbage": (
        "t10k-labels-idx1-ubyte.gz",
        lambda path: path.write_bytes(b"<html>Not found</html>"),
        "expected a complete gzip file, found Not a gzipped file",
    ),
    "wrong magic": (
        "train-labels-idx1-ubyte.gz",
        lambda path: rewrite(path, lambda d: struct.pack(">I", 2051) + d[4:]),
        "expected idx magic number 2049, found 2051",
    ),
    "short header": (
        "t10k-images-idx3-ubyte.gz",
        lambda path: rewrite(path, lambda d: d[:10]),
        "expected an idx header of 16 bytes, found 10 bytes",
    ),
    "not 28x28": (
        "t10k-images-idx3-ubyte.gz",
        lambda path: rewrite(path, lambda d: d[:8] + struct.pack(">2I", 56, 14) + d[16:]),
        "expected 28x28 images, found 56x14",
    ),
    "data cut short": (
        "train-images-idx3-ubyte.gz",
        lambda path: rewrite(path, lambda d: d[:-28]),
        "expected 31,360 bytes of data after the header, found 31,332 bytes",
    ),
    "label out of range": (
        "train-labels-idx1-ubyte.gz",
        lambda path: rewrite(path, lambda d: d[:-1] + b"\x0a"),
        "expected labels 0..9, found label 10",
    ),
}


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_file_is_one_config_error_line_naming_it(published_fake, damage, verify):
    name, change, expected = DAMAGE[damage]
    path = published_fake / name
    change(path)
    with pytest.raises(ConfigError, match=expected) as error:
        FashionMNIST(data_dir=str(published_fake), verify=verify).load(seed=0)
    message = str(error.value)
    assert message.startswith(f"{name} ({path}): ") and "\n" not in message
    assert f"restore the original from {fashion_mnist.ZALANDO_URL}{name}" in message


def test_labels_missing_fail_verification_and_the_count_check(published_fake):
    path = published_fake / "t10k-labels-idx1-ubyte.gz"
    rewrite(path, lambda d: d[:4] + struct.pack(">I", N_TEST - 2) + d[8:-2])
    with pytest.raises(ConfigError, match=f"expected {N_TEST} rows .*, found {N_TEST - 2} rows"):
        FashionMNIST(data_dir=str(published_fake)).load(seed=0)
    with pytest.raises(ConfigError, match=rf"expected {N_TEST} labels \(one per image\), found"):
        FashionMNIST(data_dir=str(published_fake), verify=False).load(seed=0)


def test_missing_data_dir_files_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="not found in dataset.data_dir=.*make data-fashion"):
        FashionMNIST(data_dir=str(tmp_path)).files()


def test_system_copy_is_used_when_no_data_dir(fashion_dir, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", fashion_dir)
    assert set(FashionMNIST(download=False).files().values()) == set(fashion_dir.iterdir())


def test_no_copy_and_no_download_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "absent")
    with pytest.raises(ConfigError, match="make data-fashion-mnist"):
        FashionMNIST(download=False).files()


def test_downloads_from_the_url_checking_each_gz_md5(published_fake, tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "absent")
    cache = tmp_path / "cache"
    loader = FashionMNIST(url=published_fake.as_uri() + "/", download_dir=str(cache))
    assert len(loader.load(seed=0).test) == N_TEST
    assert sorted(p.name for p in cache.iterdir()) == sorted(fashion_mnist.GZ_MD5)
    monkeypatch.setattr(fashion_mnist, "GZ_MD5", dict.fromkeys(fashion_mnist.GZ_MD5, "0" * 32))
    with pytest.raises(ConfigError, match="checksum mismatch for train-images-idx3-ubyte.gz"):
        FashionMNIST(url=published_fake.as_uri() + "/", download_dir=str(tmp_path / "c2")).files()


def test_fingerprint_is_the_sha256_of_each_file(fashion_dir):
    prints = FashionMNIST(data_dir=str(fashion_dir)).fingerprint()
    assert prints == {
        name: hashlib.sha256((fashion_dir / name).read_bytes()).hexdigest()
        for name in fashion_mnist.GZ_MD5
    }


def test_real_debian_files_pass_verification_and_split_30k_30k_10k():
    if not all((fashion_mnist.SYSTEM_DIR / n).is_file() for n in fashion_mnist.GZ_MD5):
        pytest.skip(f"no Fashion-MNIST in {fashion_mnist.SYSTEM_DIR} (make data-fashion-mnist)")
    splits = FashionMNIST().load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (30_000, 30_000, 10_000)
    assert splits.train.x.shape[1:] == (1, 28, 28)
    assert splits.train.x.min() == -0.5 and splits.train.x.max() == 0.5
    assert np.bincount(splits.test.y).tolist() == [1000] * 10  # the test set is balanced
