import hashlib

import numpy as np
import pytest

from subpop_runner.data import adult
from subpop_runner.data.adult import Adult, download, read_adult
from subpop_runner.errors import ConfigError


def test_reads_both_original_files_and_strips_test_label_dot(adult_dir):
    frame = read_adult({n: adult_dir / n for n in ("adult.data", "adult.test")})
    assert len(frame) == 240
    assert set(frame["income"]) <= {"<=50K", ">50K"}


def test_load_gives_disjoint_thirds_with_paper_preprocessing(adult_dir):
    splits = Adult(data_dir=str(adult_dir)).load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (80, 80, 80)
    rows = [tuple(r) for part in (splits.train, splits.aux, splits.test) for r in part.x]
    assert len(set(rows)) > 230  # distinct rows stay distinct across parts
    # 5 numeric + one-hot of the 6 kept categoricals; education/native-country/fnlwgt dropped
    frame = read_adult({n: adult_dir / n for n in ("adult.data", "adult.test")})
    n_onehot = sum(frame[c].nunique() for c in adult.CATEGORICAL)
    assert splits.n_features == 5 + n_onehot
    assert list(splits.aux.annotations.columns) == adult.ANNOTATIONS
    assert np.allclose(splits.train.x[:, :5].mean(0), 0, atol=1e-5)  # scaled on train


def test_same_seed_same_split(adult_dir):
    a, b = (Adult(data_dir=str(adult_dir)).load(seed=4) for _ in range(2))
    assert np.array_equal(a.test.x, b.test.x) and np.array_equal(a.aux.y, b.aux.y)


def test_missing_data_dir_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="dataset.data_dir=null"):
        Adult(data_dir=str(tmp_path)).files()


def test_bad_fractions_are_rejected():
    with pytest.raises(ConfigError, match="fractions"):
        Adult(train_fraction=0.6, aux_fraction=0.6)


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


def test_loader_downloads_when_nothing_local(adult_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(adult, "_packaged_dir", lambda: None)
    monkeypatch.setattr(
        adult,
        "SHA256",
        {n: hashlib.sha256((adult_dir / n).read_bytes()).hexdigest() for n in adult.SHA256},
    )
    loader = Adult(url=adult_dir.as_uri() + "/", download_dir=str(tmp_path / "cache"))
    assert len(loader.load(seed=0).test) == 80
    assert (tmp_path / "cache" / "adult.test").is_file()


def test_no_copy_and_no_download_names_the_fix(monkeypatch):
    monkeypatch.setattr(adult, "_packaged_dir", lambda: None)
    with pytest.raises(ConfigError, match="make install"):
        Adult(download=False).files()
