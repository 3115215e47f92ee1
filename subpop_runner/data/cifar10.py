"""CIFAR-10 (Krizhevsky 2009): 60,000 colour 32×32 images of 10 classes (paper Sec. 5.1).

Source: the official python version, ``cifar-10-python.tar.gz``, whose six batch files are
Python **pickles**. Files are taken from, in order: ``data_dir`` when set (the extracted
``cifar-10-batches-py`` folder, or the folder holding it); else the copy unpacked in
``download_dir`` by an earlier run; else the archive downloaded into ``download_dir``, checked
against its published MD5 and unpacked there (`extract_tar` refuses members that would land
outside it). An archive fetched by hand can be put in ``download_dir``: one with the right MD5
is used without downloading.

Unpickling can run code. So batches are read by an unpickler that builds nothing but the
containers and numpy arrays a batch holds, and with ``verify=True`` (the default) each
batch's published MD5 (which also fixes its 10,000 rows) is checked before it is unpickled.
Always checked, each mismatch one `ConfigError` line: a readable pickle holding ``b"data"``,
uint8 ``[n, 3072]``, and ``b"labels"``, n labels in 0..9. `CIFAR10.fingerprint` gives the
SHA-256 of each batch file.

Split: the authors' rule (`subpop_runner.data.images.halves_split`): the 50,000 train images
shuffled with the seed and halved into D and D_aux (25,000 each), the 10,000 test images as
D_test. A row holds the red, green and blue 32×32 planes in turn, so it reshapes to
``[3, 32, 32]`` (channels first); pixels ``x / 255 - 0.5``.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import pickle
from pathlib import Path

import numpy as np

from subpop_runner.data.base import Dataset
from subpop_runner.data.digest import file_sha256
from subpop_runner.data.download import download, extract_tar
from subpop_runner.data.images import image_splits
from subpop_runner.errors import ConfigError
from subpop_runner.types import Splits

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
TRAIN_BATCHES = [name for name in BATCH_MD5 if name.startswith("data_batch")]
SHAPE = (3, 32, 32)
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# The only globals a batch may name: how numpy arrays (and, in pickles written by Python 3
# with protocol 2, bytes) are rebuilt. numpy 1 and 2 spell the first module differently.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class CIFAR10(Dataset):
    """CIFAR-10 classification, split into disjoint D / D_aux / D_test.

    ``verify=False`` skips the published MD5s (not the format checks), for users' own
    variants of the batches.
    """

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        download: bool = True,
        download_dir: str = "~/.cache/subpop_runner/cifar10",
        url: str = URL,
        max_rows: int | None = None,
        verify: bool = True,
    ) -> None:
        self.data_dir, self.download, self.url = data_dir, download, url
        self.download_dir = Path(download_dir).expanduser()
        self.max_rows, self.verify = max_rows, verify

    def files(self) -> dict[str, Path]:
        """Where the six batch files are; raises `ConfigError` naming the fix."""
        if self.data_dir is not None:
            given = Path(self.data_dir).expanduser()
            folder = given if (given / TRAIN_BATCHES[0]).is_file() else given / FOLDER
            if _missing(folder):
                raise ConfigError(
                    f"CIFAR-10 batch file(s) {_missing(folder)} not found in {folder}. Set "
                    f"dataset.data_dir to the {FOLDER} folder unpacked from {ARCHIVE} (or the "
                    "folder holding it), or to null to download it."
                )
            return {name: folder / name for name in BATCH_MD5}
        folder = self.download_dir / FOLDER
        if _missing(folder):
            if not self.download:
                raise ConfigError(
                    f"CIFAR-10 not found: no dataset.data_dir, no {folder} and "
                    "dataset.download=false. Set dataset.data_dir to an unpacked copy, or "
                    "dataset.download=true."
                )
            fix = f"download {ARCHIVE} by hand and put it in dataset.download_dir"
            archive = download(self.url, self.download_dir / ARCHIVE, md5=ARCHIVE_MD5, fix=fix)
            extract_tar(archive, self.download_dir)
            if _missing(folder):
                raise ConfigError(
                    f"{archive} did not hold the batch files {_missing(folder)} under {FOLDER}/; "
                    f"delete it and download the original from {URL}"
                )
        return {name: folder / name for name in BATCH_MD5}

    def fingerprint(self) -> dict[str, str]:
        """SHA-256 of each batch file `load` reads, by file name."""
        return {name: file_sha256(path) for name, path in self.files().items()}

    def load(self, seed: int) -> Splits:
        files = self.files()
        batches = [read_batch(name, files[name], verify=self.verify) for name in TRAIN_BATCHES]
        train = (
            np.concatenate([images for images, _ in batches]),
            np.concatenate([labels for _, labels in batches]),
        )
        test = read_batch("test_batch", files["test_batch"], verify=self.verify)
        return image_splits(
            "CIFAR-10", train, test, CLASS_NAMES, seed=seed, max_rows=self.max_rows
        )


def read_batch(name: str, path: Path, *, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[n, 3, 32, 32]`` and int64 labels ``[n]`` of one batch file."""
    data = path.read_bytes()
    digest = hashlib.md5(data).hexdigest()
    if verify and digest != BATCH_MD5[name]:
        raise ConfigError(
            f"{name} ({path}) is not the published CIFAR-10 batch: expected MD5 "
            f"{BATCH_MD5[name]}, found {digest}; {_restore()}, or set dataset.verify=false for "
            "your own variant"
        )
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # damaged pickles fail in many ways; each is a bad file
        raise _error(name, path, "a complete pickle", f"{type(error).__name__}: {error}") from None
    if not isinstance(batch, dict) or not {b"data", b"labels"} <= batch.keys():
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise _error(name, path, "a dict with keys b'data' and b'labels'", found)
    images, labels = batch[b"data"], np.asarray(batch[b"labels"])
    n_values = int(np.prod(SHAPE))
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2:
        found = getattr(images, "dtype", type(images).__name__)
        raise _error(name, path, f"b'data' a uint8 array [n, {n_values}]", found)
    if images.shape[1] != n_values or labels.ndim != 1 or len(labels) != len(images):
        found = f"data {list(images.shape)} and labels {list(labels.shape)}"
        raise _error(name, path, f"data [n, {n_values}] and n labels", found)
    if labels.dtype.kind not in "iu" or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise _error(name, path, "labels 0..9", f"{labels[:5].tolist()}…")
    return images.reshape(-1, *SHAPE), labels.astype(np.int64)


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}")
        return ALLOWED_GLOBALS[(module, name)]


def _missing(folder: Path) -> list[str]:
    return [name for name in BATCH_MD5 if not (folder / name).is_file()]


def _error(name: str, path: Path, expected: str, found: object) -> ConfigError:
    return ConfigError(f"{name} ({path}): expected {expected}, found {found}; {_restore()}")


def _restore() -> str:
    return f"restore it from the original {URL}"
