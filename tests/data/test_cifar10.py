import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from subpop_runner.data import cifar10
from subpop_runner.data.cifar10 import CIFAR10, read_batch
from subpop_runner.errors import ConfigError

PER_BATCH = 8  # 40 train images, 8 test images


def batch_bytes(first: int, rng: np.random.Generator) -> bytes:
    """One batch as the official files hold it: a protocol-2 pickle of a dict with byte-string
    keys, ``b"data"`` uint8 [n, 3072] (red, green, blue planes) and ``b"labels"`` a list.
    Image ``first + i`` carries its number in its first two red pixels."""
    data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
    data[:, :2] = [divmod(first + i, 256) for i in range(PER_BATCH)]
    batch = {
        b"batch_label": b"training batch",
        b"labels": rng.integers(0, 10, size=PER_BATCH).tolist(),
        b"data": data,
        b"filenames": [f"img_{first + i}.png".encode() for i in range(PER_BATCH)],
    }
    return pickle.dumps(batch, protocol=2)


def write_batches(parent: Path, seed: int = 0) -> Path:
    """``parent/cifar-10-batches-py/`` with the six batch files; test images from 1000 on."""
    rng = np.random.default_rng(seed)
    folder = parent / cifar10.FOLDER
    folder.mkdir(parents=True)
    for i, name in enumerate(cifar10.TRAIN_BATCHES):
        (folder / name).write_bytes(batch_bytes(i * PER_BATCH, rng))
    (folder / "test_batch").write_bytes(batch_bytes(1000, rng))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": []}, protocol=2))
    return folder


def write_archive(path: Path, batches: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(batches, arcname=cifar10.FOLDER)
    return path


@pytest.fixture
def batches(tmp_path: Path) -> Path:
    return write_batches(tmp_path / "data")


@pytest.fixture
def published_fake(batches: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny batches stand in for the published ones (their MD5s)."""
    md5s = {n: hashlib.md5((batches / n).read_bytes()).hexdigest() for n in cifar10.BATCH_MD5}
    monkeypatch.setattr(cifar10, "BATCH_MD5", md5s)
    return batches


def image_ids(x: np.ndarray) -> set[int]:
    pixels = np.rint((x[:, 0, 0, :2] + 0.5) * 255).astype(int)
    return set((pixels[:, 0] * 256 + pixels[:, 1]).tolist())


@pytest.mark.parametrize("where", ["batches folder", "its parent"])
def test_train_batches_halved_test_batch_whole_disjoint(published_fake, where):
    data_dir = published_fake if where == "batches folder" else published_fake.parent
    splits = CIFAR10(data_dir=str(data_dir)).load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (20, 20, 8)
    train, aux, test = (image_ids(p.x) for p in (splits.train, splits.aux, splits.test))
    assert train | aux == set(range(40)) and not train & aux
    assert test == set(range(1000, 1008))
    assert splits.class_names[0] == "airplane" and splits.n_classes == 10


def test_rows_become_channels_first_images_scaled_as_the_authors(batches):
    splits = CIFAR10(data_dir=str(batches), verify=False).load(seed=0)
    rows = pickle.loads((batches / "test_batch").read_bytes())[b"data"]
    assert splits.test.x.shape == (8, 3, 32, 32) and splits.test.x.dtype == np.float32
    green = rows[:, 1024:2048].reshape(-1, 32, 32)  # the second plane of each row
    assert np.allclose(splits.test.x[:, 1], green / 255 - 0.5, atol=1e-6)
    assert splits.test.y.dtype == np.int64 and splits.test.annotations is None


def test_same_seed_same_split_other_seed_other_split(batches):
    first, again, other = (
        CIFAR10(data_dir=str(batches), verify=False).load(seed=s) for s in (5, 5, 6)
    )
    assert np.array_equal(first.aux.x, again.aux.x) and np.array_equal(
        first.train.y, again.train.y
    )
    assert image_ids(first.train.x) != image_ids(other.train.x)


def test_max_rows_caps_each_part_at_a_third(batches):
    splits = CIFAR10(data_dir=str(batches), verify=False, max_rows=30).load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (10, 10, 8)
    assert not image_ids(splits.train.x) & image_ids(splits.aux.x)


def test_own_batches_fail_verification_before_unpickling(batches):
    with pytest.raises(ConfigError, match="is not the published CIFAR-10 batch") as error:
        CIFAR10(data_dir=str(batches)).load(seed=0)
    message = str(error.value)
    assert message.startswith(f"data_batch_1 ({batches / 'data_batch_1'})")
    assert "expected MD5 c99cafc152244af753f735de768cd75f" in message
    assert "dataset.verify=false" in message and "\n" not in message


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_would_run_code_is_refused_even_unverified(batches, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (batches / "data_batch_3").write_bytes(pickle.dumps({b"data": RunsCode()}, protocol=2))
    with pytest.raises(ConfigError, match=r"data_batch_3 .*refused to load global \w+\.system"):
        CIFAR10(data_dir=str(batches), verify=False).load(seed=0)
    assert not (tmp_path / "pwned").exists()


# Each damage to a batch, and what its error must say (with verify=False: past the MD5 check).
DAMAGE = {
    "truncated": (lambda data: data[: len(data) // 2], "expected a complete pickle, found"),
    "garbage": (lambda data: b"<html>Not found</html>", "expected a complete pickle, found"),
    "empty": (lambda data: b"", "expected a complete pickle, found EOFError"),
    "not a dict": (lambda data: pickle.dumps([1, 2]), "expected a dict with keys b'data'"),
    "no labels": (
        lambda data: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}),
        "expected a dict with keys b'data' and b'labels', found \\[b'data'\\]",
    ),
    "float data": (
        lambda data: pickle.dumps({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}),
        "expected b'data' a uint8 array \\[n, 3072\\], found float64",
    ),
    "wrong width": (
        lambda data: pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}),
        "expected data \\[n, 3072\\] and n labels, found data \\[2, 1024\\] and labels \\[2\\]",
    ),
    "label 10": (
        lambda data: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}),
        "expected labels 0..9, found \\[0, 10\\]",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_batch_is_one_config_error_line_naming_it(batches, damage):
    change, expected = DAMAGE[damage]
    path = batches / "test_batch"
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(ConfigError, match=expected) as error:
        read_batch("test_batch", path, verify=False)
    message = str(error.value)
    assert message.startswith(f"test_batch ({path}): expected ") and "\n" not in message
    assert message.endswith(f"restore it from the original {cifar10.URL}")


def test_damaged_published_batch_fails_on_its_md5(published_fake):
    path = published_fake / "data_batch_5"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="data_batch_5 .* is not the published CIFAR-10 batch"):
        CIFAR10(data_dir=str(published_fake)).load(seed=0)


def test_missing_batches_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"batch file\(s\) \['data_batch_1'.*unpacked from"):
        CIFAR10(data_dir=str(tmp_path)).files()


def test_no_copy_and_no_download_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="dataset.download=false"):
        CIFAR10(download=False, download_dir=str(tmp_path)).files()


@pytest.fixture
def served(published_fake, tmp_path, monkeypatch) -> Path:
    """A tiny official-layout archive at a file:// URL, with its MD5 as the published one."""
    archive = write_archive(tmp_path / "served" / cifar10.ARCHIVE, published_fake)
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    return archive


def test_downloads_checks_and_unpacks_the_archive_then_reuses_it(served, tmp_path):
    cache = tmp_path / "cache"
    splits = CIFAR10(url=served.as_uri(), download_dir=str(cache)).load(seed=0)
    assert len(splits.test) == 8
    assert (cache / cifar10.ARCHIVE).is_file() and (
        cache / cifar10.FOLDER / "test_batch"
    ).is_file()
    served.unlink()  # unpacked once: no second download
    again = CIFAR10(url=served.as_uri(), download_dir=str(cache), download=False).load(seed=0)
    assert np.array_equal(again.test.x, splits.test.x)


def test_downloaded_archive_with_another_md5_is_refused(served, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", "0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match="checksum mismatch for cifar-10-python.tar.gz"):
        CIFAR10(url=served.as_uri(), download_dir=str(cache)).files()
    assert not (cache / cifar10.FOLDER).exists()


def test_archive_with_a_member_escaping_the_folder_is_refused(served, tmp_path, monkeypatch):
    with tarfile.open(served, "w:gz") as tar:
        info = tarfile.TarInfo(f"{cifar10.FOLDER}/../../escaped")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", hashlib.md5(served.read_bytes()).hexdigest())
    with pytest.raises(ConfigError, match="would be written outside the folder"):
        CIFAR10(url=served.as_uri(), download_dir=str(tmp_path / "a" / "cache")).files()
    assert not (tmp_path / "a" / "escaped").exists()


def test_fingerprint_is_the_sha256_of_each_batch(batches):
    prints = CIFAR10(data_dir=str(batches)).fingerprint()
    assert prints == {
        n: hashlib.sha256((batches / n).read_bytes()).hexdigest() for n in cifar10.BATCH_MD5
    }
