"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 70,000 grey 28×28 images of 10 kinds of
clothing, the offline stand-in for CIFAR-10 on machines that cannot download it.

Files (the four gzipped idx files) are taken from, in order: ``data_dir`` when set;
``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``, installed by
``make data-fashion-mnist``); else a download from Zalando's mirror into ``download_dir``,
checked against the published MD5 of each ``.gz`` file.

Every file read is checked before use, and anything wrong is one `ConfigError` line naming the
file, what was expected, what was found and the fix. Always: an intact gzip stream, the idx
magic number (2051 for images, 2049 for labels), 28×28 images, data as long as the header says,
as many labels as images, labels 0..9. With ``verify=True`` (the default) also the published
MD5 of the decompressed file and the counts 60,000 / 10,000. The decompressed content is what
is compared because Debian recompressed the files: its ``.gz`` bytes differ from Zalando's,
their content does not. `FashionMNIST.fingerprint` gives the SHA-256 of each file read.

Split: the authors' CIFAR-10 rule (`subpop_runner.data.images.halves_split`): the 60,000
train images shuffled with the seed and halved into D and D_aux, the 10,000 test images as
D_test. Pixels ``x / 255 - 0.5``, shape ``[n, 1, 28, 28]``.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from subpop_runner.data.base import Dataset
from subpop_runner.data.digest import file_sha256
from subpop_runner.data.download import download
from subpop_runner.data.images import image_splits
from subpop_runner.errors import ConfigError
from subpop_runner.types import Splits

ZALANDO_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# Published MD5s: of each .gz file as served, and of its decompressed content.
GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CONTENT_MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}
ROWS = {"train": 60_000, "t10k": 10_000}
SIDE = 28
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # idx: unsigned bytes, 3 or 1 dimensions
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class FashionMNIST(Dataset):
    """Fashion-MNIST classification, split into disjoint D / D_aux / D_test.

    ``verify=False`` skips the published MD5s and counts (not the format checks), for users'
    own variants of the files.
    """

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        download: bool = True,
        download_dir: str = "~/.cache/subpop_runner/fashion_mnist",
        url: str = ZALANDO_URL,
        max_rows: int | None = None,
        verify: bool = True,
    ) -> None:
        self.data_dir, self.download, self.url = data_dir, download, url
        self.download_dir = Path(download_dir).expanduser()
        self.max_rows, self.verify = max_rows, verify

    def files(self) -> dict[str, Path]:
        """Where the four ``.gz`` files are; raises `ConfigError` naming the fix."""
        if self.data_dir is not None:
            folder = Path(self.data_dir).expanduser()
            missing = [name for name in GZ_MD5 if not (folder / name).is_file()]
            if missing:
                raise ConfigError(
                    f"Fashion-MNIST file(s) {missing} not found in dataset.data_dir={folder}. "
                    "Put the four *-ubyte.gz files there, or set dataset.data_dir=null to use "
                    f"{SYSTEM_DIR} (make data-fashion-mnist) or download them."
                )
            return {name: folder / name for name in GZ_MD5}
        if all((SYSTEM_DIR / name).is_file() for name in GZ_MD5):
            return {name: SYSTEM_DIR / name for name in GZ_MD5}
        if not self.download:
            raise ConfigError(
                f"Fashion-MNIST not found: no dataset.data_dir, nothing in {SYSTEM_DIR} (run "
                "`make data-fashion-mnist`) and dataset.download=false."
            )
        fix = "download the four *-ubyte.gz files by hand and set dataset.data_dir to their folder"
        return {
            name: download(self.url + name, self.download_dir / name, md5=md5, fix=fix)
            for name, md5 in GZ_MD5.items()
        }

    def fingerprint(self) -> dict[str, str]:
        """SHA-256 of each file `load` reads, by file name."""
        return {name: file_sha256(path) for name, path in self.files().items()}

    def load(self, seed: int) -> Splits:
        files = self.files()
        train, test = (read_set(files, part, verify=self.verify) for part in ROWS)
        return image_splits(
            "Fashion-MNIST", train, test, CLASS_NAMES, seed=seed, max_rows=self.max_rows
        )


def read_set(files: dict[str, Path], part: str, *, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[n, 1, 28, 28]`` and labels ``[n]`` of ``part`` (``train`` or ``t10k``)."""
    images_name, labels_name = f"{part}-images-idx3-ubyte.gz", f"{part}-labels-idx1-ubyte.gz"
    images = read_idx(images_name, files[images_name], verify=verify)
    labels = read_idx(labels_name, files[labels_name], verify=verify)
    if len(labels) != len(images):
        expected = f"{len(images):,} labels (one per image)"
        raise _error(labels_name, files[labels_name], expected, f"{len(labels):,}")
    return images[:, None], labels


def read_idx(name: str, path: Path, *, verify: bool) -> np.ndarray:
    """The array in one gzipped idx file: ``[n, 28, 28]`` for images, ``[n]`` for labels."""
    try:
        content = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:
        raise _error(name, path, "a complete gzip file", f"{error}") from None
    images = "images" in name
    magic = IMAGE_MAGIC if images else LABEL_MAGIC
    n_dims = 3 if images else 1
    header = 4 * (1 + n_dims)
    if len(content) < header:
        raise _error(name, path, f"an idx header of {header} bytes", f"{len(content)} bytes")
    found_magic, *dims = (int.from_bytes(content[i : i + 4], "big") for i in range(0, header, 4))
    if found_magic != magic:
        raise _error(name, path, f"idx magic number {magic}", found_magic)
    if images and dims[1:] != [SIDE, SIDE]:
        raise _error(name, path, f"{SIDE}x{SIDE} images", f"{dims[1]}x{dims[2]}")
    if len(content) - header != math.prod(dims):
        found = f"{len(content) - header:,} bytes"
        raise _error(name, path, f"{math.prod(dims):,} bytes of data after the header", found)
    array = np.frombuffer(content, np.uint8, offset=header).reshape(dims)
    if not images and array.max(initial=0) >= len(CLASS_NAMES):
        raise _error(name, path, "labels 0..9", f"label {array.max()}")
    digest = hashlib.md5(content).hexdigest()
    rows = ROWS[name.split("-")[0]]
    if verify and (digest != CONTENT_MD5[name] or dims[0] != rows):
        raise ConfigError(
            f"{name} ({path}) is not the published Fashion-MNIST file: expected {rows:,} "
            f"rows with content MD5 {CONTENT_MD5[name][:12]}…, found {dims[0]:,} rows with "
            f"MD5 {digest[:12]}…; {_restore(name)}, or set dataset.verify=false for your own "
            "variant"
        )
    return array


def _error(name: str, path: Path, expected: str, found: object) -> ConfigError:
    return ConfigError(f"{name} ({path}): expected {expected}, found {found}; {_restore(name)}")


def _restore(name: str) -> str:
    return (
        f"restore the original from {ZALANDO_URL}{name} (or `make data-fashion-mnist` with "
        "dataset.data_dir=null)"
    )
