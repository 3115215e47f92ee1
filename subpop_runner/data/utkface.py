"""UTKFace (Zhang, Song & Qi 2017): faces labelled with age, gender and race (paper Sec. 5.1).

UTKFace is handed out through links that need a browser, so there is no download: ``data_dir``
must name a folder of its images, e.g. ``UTKFace/`` unpacked from the "Aligned & Cropped Faces"
archive. Names read ``{age}_{gender}_{race}_{date&time}.jpg`` (that archive adds
``.chip.jpg``): gender 0 male, 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others.
A few published files lack a field: files whose names do not parse are left out, and their
count and an example are logged as one warning.

As in the paper: people under 15 are dropped (20,054 images remain in the paper), the task is
gender, and FeatureMatch gets the annotations ``race`` (names) and ``age_bucket``
(15-29, 30-44, 45-59, 60+). The images, shuffled with the seed, are split into 7,000 D,
7,000 D_aux and the rest as D_test, disjoint: the authors' code drew the parts' indices with
replacement, so its parts overlap; that is not repeated here.

Images are decoded with Pillow, converted to RGB, resized to 100×100 (bicubic) and scaled to
``x / 255 - 0.5``, shape ``[n, 3, 100, 100]``. A file Pillow cannot decode is a `ConfigError`
naming it. With ``verify=True`` (the default) every image must also be 200×200, the size of the
published aligned and cropped set; ``verify=False`` takes any size, for other variants.
Only the rows kept are decoded: a ``max_rows`` run reads a few thousand files, a full one about
20,000 each time (≈ 1 ms per image on one core here, so ≈ 20 s). No cache of decoded arrays is
kept: it would take 600 MB per folder to save those seconds. The full split holds 2.4 GB of
float32 pixels.

`UTKFace.fingerprint` is one SHA-256 over the sorted names of the well-named files and the
SHA-256 of each one's bytes (each file is hashed once per process, see
`subpop_runner.data.digest`), so renaming, adding or editing any image changes it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from subpop_runner.data.base import Dataset
from subpop_runner.data.digest import file_sha256
from subpop_runner.data.images import capped, log_summary, scale_pixels
from subpop_runner.data.splits import sized_split
from subpop_runner.errors import ConfigError
from subpop_runner.types import Part, Splits

log = logging.getLogger(__name__)

NAME = re.compile(r"(?P<age>\d+)_(?P<gender>[01])_(?P<race>[0-4])_\d+\.jpg(\.chip\.jpg)?")
NAME_FORM = "{age}_{gender}_{race}_{date}.jpg"
RACES = ("White", "Black", "Asian", "Indian", "Others")
CLASS_NAMES = ("male", "female")
MIN_AGE = 15
AGE_BUCKETS = [MIN_AGE, 30, 45, 60, np.inf]
AGE_LABELS = ["15-29", "30-44", "45-59", "60+"]
PART_ROWS = 7_000  # D and D_aux each; D_test is the rest
SIDE = 100
PUBLISHED_SIZE = (200, 200)


class UTKFace(Dataset):
    """UTKFace gender classification with race and age annotations, split into disjoint
    D / D_aux / D_test."""

    def __init__(
        self, *, data_dir: str | None = None, max_rows: int | None = None, verify: bool = True
    ) -> None:
        self.data_dir, self.max_rows, self.verify = data_dir, max_rows, verify

    def folder(self) -> Path:
        """The image folder; raises `ConfigError` naming the fix when there is none."""
        if self.data_dir is None:
            raise ConfigError(
                "UTKFace has no download: set dataset.data_dir to the folder of its images "
                "(UTKFace/ unpacked from the Aligned & Cropped Faces archive)"
            )
        folder = Path(self.data_dir).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"UTKFace folder dataset.data_dir={folder} does not exist; set it to the "
                "folder of the images"
            )
        return folder

    def fingerprint(self) -> dict[str, str]:
        """One digest over every well-named file's name and content."""
        folder, digest = self.folder(), hashlib.sha256()
        for name in scan(folder)[0]["file"]:
            digest.update(f"{name} {file_sha256(folder / name)}\n".encode())
        return {"utkface": digest.hexdigest()}

    def load(self, seed: int) -> Splits:
        frame, malformed = scan(self.folder())
        if malformed:
            log.warning(
                "UTKFace: %d file(s) in %s not named %s are left out, e.g. %r",
                len(malformed),
                self.folder(),
                NAME_FORM,
                malformed[0],
            )
        frame = frame[frame["age"] >= MIN_AGE].reset_index(drop=True)
        if len(frame) <= 2 * PART_ROWS:
            raise ConfigError(
                f"UTKFace folder {self.folder()}: expected more than {2 * PART_ROWS:,} images of "
                f"people aged {MIN_AGE}+ for the paper's {PART_ROWS:,} / {PART_ROWS:,} / rest "
                f"split, found {len(frame):,}; set dataset.data_dir to the whole UTKFace folder"
            )
        parts = sized_split(len(frame), PART_ROWS, seed)
        train, aux, test = (self._part(frame, rows) for rows in capped(parts, self.max_rows))
        splits = Splits(train, aux, test, CLASS_NAMES)
        log_summary(f"UTKFace ({len(frame):,} images of people aged {MIN_AGE}+)", splits)
        return splits

    def _part(self, frame: pd.DataFrame, rows: np.ndarray) -> Part:
        chosen = frame.iloc[rows].reset_index(drop=True)
        folder = self.folder()
        pixels = np.stack([read_image(folder / name, verify=self.verify) for name in chosen.file])
        return Part(scale_pixels(pixels), chosen["gender"].to_numpy(np.int64), annotate(chosen))


def scan(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per well-named image (columns ``file``, ``age``, ``gender``, ``race``), sorted
    by file name, people under 15 included; and the names of the other files."""
    rows, malformed = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        match = NAME.fullmatch(path.name)
        if match is None:
            malformed.append(path.name)
        else:
            rows.append((path.name, *(int(match[k]) for k in ("age", "gender", "race"))))
    if not rows:
        raise ConfigError(
            f"UTKFace folder {folder}: expected images named {NAME_FORM}, found none among "
            f"{len(malformed)} file(s); set dataset.data_dir to the folder of the images"
        )
    return pd.DataFrame(rows, columns=["file", "age", "gender", "race"]), malformed


def annotate(frame: pd.DataFrame) -> pd.DataFrame:
    """Race names and age buckets, the columns FeatureMatch matches on."""
    bucket = pd.cut(frame["age"], AGE_BUCKETS, right=False, labels=AGE_LABELS)
    race = frame["race"].map(dict(enumerate(RACES)))
    return pd.DataFrame({"race": race, "age_bucket": bucket.astype(str)})


def read_image(path: Path, *, verify: bool) -> np.ndarray:
    """uint8 RGB pixels ``[3, 100, 100]`` of one image file."""
    try:
        with Image.open(path) as image:
            size = image.size
            resized = image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ConfigError(
            f"UTKFace image {path}: expected an image Pillow can decode, found {error}; replace "
            "it with the original or remove it"
        ) from None
    if verify and size != PUBLISHED_SIZE:
        raise ConfigError(
            f"UTKFace image {path}: expected {PUBLISHED_SIZE[0]}x{PUBLISHED_SIZE[1]} pixels "
            f"(the aligned and cropped set), found {size[0]}x{size[1]}; set "
            "dataset.verify=false for another variant"
        )
    return np.asarray(resized).transpose(2, 0, 1)
