import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from subpop_runner.data import adult
from subpop_runner.data.adult import Adult, download, read_adult
from subpop_runner.errors import ConfigError


@pytest.fixture
def published_fake(adult_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The hand-made files of ``adult_dir`` stand in for the published ones (their SHA-256
    and row counts), so that ``verify=True`` can be tested on small files."""
    monkeypatch.setattr(
        adult,
        "SHA256",
        {n: hashlib.sha256((adult_dir / n).read_bytes()).hexdigest() for n in adult.SHA256},
    )
    monkeypatch.setattr(adult, "ROWS", {"adult.data": 120, "adult.test": 120})
    return adult_dir


def test_reads_both_original_files_and_strips_test_label_dot(adult_dir):
    frame = read_adult({n: adult_dir / n for n in ("adult.data", "adult.test")}, verify=False)
    assert len(frame) == 240
    assert set(frame["income"]) <= {"<=50K", ">50K"}


def test_load_gives_disjoint_thirds_with_paper_preprocessing(adult_dir):
    splits = Adult(data_dir=str(adult_dir), verify=False).load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (80, 80, 80)
    rows = [tuple(r) for part in (splits.train, splits.aux, splits.test) for r in part.x]
    assert len(set(rows)) > 230  # distinct rows stay distinct across parts
    # 5 numeric + one-hot of the 6 kept categoricals; education/native-country/fnlwgt dropped
    frame = read_adult({n: adult_dir / n for n in ("adult.data", "adult.test")}, verify=False)
    n_onehot = sum(frame[c].nunique() for c in adult.CATEGORICAL)
    assert splits.n_features == 5 + n_onehot
    assert list(splits.aux.annotations.columns) == adult.ANNOTATIONS
    assert np.allclose(splits.train.x[:, :5].mean(0), 0, atol=1e-5)  # scaled on train


def test_same_seed_same_split(adult_dir):
    a, b = (Adult(data_dir=str(adult_dir), verify=False).load(seed=4) for _ in range(2))
    assert np.array_equal(a.test.x, b.test.x) and np.array_equal(a.aux.y, b.aux.y)


def test_row_sample_follows_the_seed(adult_dir):
    first, again, other = (
        Adult(data_dir=str(adult_dir), verify=False, max_rows=90).load(seed=s) for s in (4, 4, 5)
    )
    assert len(first.train) + len(first.aux) + len(first.test) == 90
    assert first.aux.annotations.equals(again.aux.annotations)
    assert np.array_equal(first.train.x, again.train.x)
    assert not np.array_equal(first.train.x, other.train.x)


def test_missing_data_dir_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="dataset.data_dir=null"):
        Adult(data_dir=str(tmp_path)).files()


def test_packaged_copy_is_the_original_uci_files():
    files = Adult().files()
    for name, path in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == adult.SHA256[name]


def test_download_verifies_checksum_and_keeps_no_partial_file(adult_dir, tmp_path):
    source = adult_dir / "adult.data"
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    target = download(source.as_uri(), tmp_path / "dl" / "adult.data", good)
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(ConfigError, match="checksum mismatch"):
        download(source.as_uri(), tmp_path / "dl2" / "adult.data", "0" * 64)
    assert not any((tmp_path / "dl2").iterdir())


def test_loader_downloads_when_nothing_local(published_fake, tmp_path, monkeypatch):
    monkeypatch.setattr(adult, "_packaged_dir", lambda: None)
    adult_dir = published_fake
    loader = Adult(url=adult_dir.as_uri() + "/", download_dir=str(tmp_path / "cache"))
    assert len(loader.load(seed=0).test) == 80
    assert (tmp_path / "cache" / "adult.test").is_file()


def test_no_copy_and_no_download_names_the_fix(monkeypatch):
    monkeypatch.setattr(adult, "_packaged_dir", lambda: None)
    with pytest.raises(ConfigError, match="make install"):
        Adult(download=False).files()


def test_real_packaged_files_pass_verification():
    if adult._packaged_dir() is None:
        pytest.skip("no packaged copy of UCI Adult (make install)")
    loader = Adult()
    frame = read_adult(loader.files(), verify=True)
    assert len(frame) == 32_561 + 16_281
    assert set(frame["income"]) == {"<=50K", ">50K"}
    assert loader.fingerprint() == adult.SHA256


def test_own_files_fail_verification_with_the_fix(adult_dir):
    with pytest.raises(ConfigError, match="SHA-256") as error:
        Adult(data_dir=str(adult_dir)).load(seed=0)
    message = str(error.value)
    assert "adult.data" in message and "expected 32,561 rows" in message
    assert "found 120 rows" in message and "set dataset.verify=false" in message
    assert "\n" not in message


def replace_line(text: str, number: int, line: str) -> str:
    lines = text.split("\n")
    lines[number - 1] = line
    return "\n".join(lines)


# Each damage to adult.data, and what its error must say.
DAMAGE = {
    "truncated mid-line": (
        lambda data: data[: data.index(b"\n", 200) + 30],
        r"line \d+: expected 15 comma-separated fields, found [1-9] in",
    ),
    "appended garbage line": (
        lambda data: data + b"this line is garbage\n",
        r"line 122: expected 15 comma-separated fields, found 1 in 'this line is garbage'",
    ),
    "binary junk": (
        lambda data: data + bytes(range(128, 256)) * 4,
        r"line 122: expected UTF-8 text, found byte 0x80 \(binary data\)",
    ),
    "ASCII junk in a number": (
        lambda data: replace_line(data.decode(), 3, "x, " * 14 + "<=50K").encode(),
        r"line 3: expected a number in age, found 'x'",
    ),
    "wrong column count": (
        lambda data: replace_line(data.decode(), 5, "39, Private, <=50K").encode(),
        r"line 5: expected 15 comma-separated fields, found 3 in '39, Private, <=50K'",
    ),
    "unknown label": (
        lambda data: data.replace(b"<=50K", b"low", 1),
        r"line \d+: expected income <=50K or >50K, found 'low'",
    ),
}


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_file_is_one_config_error_line(published_fake, damage, verify):
    change, expected = DAMAGE[damage]
    path = published_fake / "adult.data"
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(ConfigError, match=expected) as error:
        Adult(data_dir=str(published_fake), verify=verify).load(seed=0)
    message = str(error.value)
    assert message.startswith(f"adult.data ({path}) line ")
    assert f"restore the original from {adult.UCI_URL}adult.data" in message
    assert "\n" not in message


def test_whole_rows_missing_fail_only_verification(published_fake):
    path = published_fake / "adult.data"
    lines = path.read_text().split("\n")
    path.write_text("\n".join(lines[:100]) + "\n")
    with pytest.raises(ConfigError, match="expected 120 rows .*, found 100 rows") as error:
        Adult(data_dir=str(published_fake)).load(seed=0)
    assert "set dataset.verify=false for your own variant" in str(error.value)
    assert len(read_adult(Adult(data_dir=str(published_fake)).files(), verify=False)) == 220


def test_test_file_labels_keep_their_dot(published_fake):
    path = published_fake / "adult.test"
    path.write_text(path.read_text().replace("50K.", "50K"))
    with pytest.raises(ConfigError, match=r"adult.test .* expected income <=50K\. or >50K\."):
        Adult(data_dir=str(published_fake), verify=False).load(seed=0)


def test_fingerprint_follows_the_content_not_the_folder(adult_dir, tmp_path):
    loader = Adult(data_dir=str(adult_dir), verify=False)
    original = loader.fingerprint()
    assert original == {
        n: hashlib.sha256((adult_dir / n).read_bytes()).hexdigest() for n in adult.SHA256
    }
    data = (adult_dir / "adult.data").read_bytes()
    (adult_dir / "adult.data").write_bytes(data[:-50])
    assert loader.fingerprint()["adult.data"] != original["adult.data"]
    (adult_dir / "adult.data").write_bytes(data)
    assert loader.fingerprint() == original
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for name in adult.SHA256:
        (copy / name).write_bytes((adult_dir / name).read_bytes())
    assert Adult(data_dir=str(copy)).fingerprint() == original


def test_numeric_columns_are_standardised_with_train_rows_only():
    """Train rows (0, 1) and the rest have different means and spreads: statistics of any
    other rows would scale them differently."""
    ages = [20.0, 40.0, 100.0, 90.0]
    frame = pd.DataFrame(
        {column: [1.0, 3.0, 50.0, 70.0] for column in adult.NUMERIC}
        | {"age": ages}
        | {column: ["a", "b", "a", "c"] for column in adult.CATEGORICAL}
        | {"income": ["<=50K", ">50K", ">50K", ">50K"]}
    )
    features, labels = adult.preprocess(frame, fit_rows=np.array([0, 1]))
    age = adult.NUMERIC.index("age")
    assert np.allclose(features[:, age], [-1.0, 1.0, 7.0, 6.0])  # mean 30, sd 10 (ddof=0)
    others = [i for i in range(len(adult.NUMERIC)) if i != age]
    assert np.allclose(features[:, others], np.array([[-1.0, 1.0, 48.0, 68.0]]).T)
    assert labels.tolist() == [0, 1, 1, 1]
