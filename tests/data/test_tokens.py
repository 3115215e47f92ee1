"""Tokenisation for the text datasets and BERT victims: tiny WordPiece tokenizers written here
(no download), a fake local Hugging Face cache, and no network: any connection fails the test."""

import json
import logging
import socket
from pathlib import Path

import numpy as np
import pytest

from subpop_runner.data import tokens
from subpop_runner.data.tokens import (
    cached_tokenize,
    load_tokenizer,
    locate,
    tokenize,
    tokenizer_digest,
    vocabulary_digest,
)
from subpop_runner.errors import ConfigError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP = 0, 1, 2, 3
WORDS = ["this", "movie", "was", "great", "awful", "plot", ".", *(f"w{i}" for i in range(100))]


def write_tokenizer(folder: Path, words: list[str] = WORDS, lowercase: bool = True) -> Path:
    """A WordPiece tokenizer over ``words`` saved as ``save_pretrained`` writes it. (In
    transformers 5 the vocabulary is the ``vocab`` argument: ``vocab_file`` is ignored.)"""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIALS + words) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=lowercase)
    tokenizer.save_pretrained(folder)
    return folder


def word_id(word: str) -> int:
    return len(SPECIALS) + WORDS.index(word)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No connection may be opened, and the hub cache is an empty folder of the test's."""
    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(str(tokenizer_dir), download=False)


def test_ids_are_cls_text_sep_then_the_pad_id(tokenizer):
    ids = tokenize(["This movie was great", "awful ."], tokenizer, max_length=8)
    assert ids.dtype == np.int32 and ids.shape == (2, 8)
    words = [word_id(w) for w in ("this", "movie", "was", "great")]
    assert ids[0].tolist() == [CLS, *words, SEP, PAD, PAD]
    assert ids[1].tolist() == [CLS, word_id("awful"), word_id("."), SEP, PAD, PAD, PAD, PAD]
    assert tokenizer.pad_token_id == PAD  # the attention mask is ids != pad id


def test_truncation_keeps_the_start_and_ends_with_sep(tokenizer):
    text = " ".join(f"w{i}" for i in range(40))
    (row,) = tokenize([text], tokenizer, max_length=10)
    assert row.tolist() == [CLS, *(word_id(f"w{i}") for i in range(8)), SEP]


def test_text_spelling_a_special_token_is_tokenised_as_text(tokenizer):
    (row,) = tokenize(["great [SEP] [PAD] movie"], tokenizer, max_length=16)
    real = row[row != PAD]
    assert real[0] == CLS and real[-1] == SEP and (real == SEP).sum() == 1
    assert (row[: len(real)] != PAD).all()  # padding only after the text


def test_many_texts_go_through_in_batches(tokenizer, monkeypatch):
    monkeypatch.setattr(tokens, "BATCH", 3)
    texts = [f"w{i} movie" for i in range(10)]
    ids = tokenize(texts, tokenizer, max_length=6)
    assert ids[:, 1].tolist() == [word_id(f"w{i}") for i in range(10)]


@pytest.fixture
def counted(monkeypatch) -> list[int]:
    """How many texts each real tokenisation (not a cache hit) handled."""
    calls: list[int] = []
    real = tokens.tokenize

    def counting(texts, tokenizer, max_length):
        calls.append(len(texts))
        return real(texts, tokenizer, max_length)

    monkeypatch.setattr(tokens, "tokenize", counting)
    return calls


TEXTS = ["This movie was great", "awful plot .", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"]


def test_cache_is_hit_by_the_next_call(tokenizer, tmp_path, counted, caplog):
    first = cached_tokenize(TEXTS, tokenizer, 8, tmp_path)
    with caplog.at_level(logging.INFO, logger="subpop_runner.data.tokens"):
        again = cached_tokenize(list(TEXTS), tokenizer, 8, tmp_path)
    assert counted == [3] and "tokens: cache hit" in caplog.text
    assert np.array_equal(first, again) and again.dtype == np.int32
    files = sorted(p.suffix for p in (tmp_path / "tokens").iterdir())
    assert files == [".lock", ".npy"]  # no temporary file left behind


def test_cache_key_follows_max_length_texts_and_tokenizer(tokenizer, tmp_path, counted):
    lowered = cached_tokenize(TEXTS, tokenizer, 8, tmp_path)
    cached_tokenize(TEXTS, tokenizer, 12, tmp_path)
    cached_tokenize(TEXTS[:2], tokenizer, 8, tmp_path)
    bigger = load_tokenizer(str(write_tokenizer(tmp_path / "b", [*WORDS, "new"])), download=False)
    cached_tokenize(TEXTS, bigger, 8, tmp_path)
    cased = load_tokenizer(str(write_tokenizer(tmp_path / "c", lowercase=False)), download=False)
    assert vocabulary_digest(cased) == vocabulary_digest(tokenizer)  # same vocabulary...
    cased_ids = cached_tokenize(TEXTS, cased, 8, tmp_path)  # ...other ids: "This" is unknown
    assert counted == [3, 3, 2, 3, 3]
    assert lowered[0, 1] == word_id("this") and cased_ids[0, 1] == UNK
    assert len(list((tmp_path / "tokens").glob("*.npy"))) == 5


@pytest.mark.parametrize(
    "damage",
    [b"", b"garbage" * 10, "wrong shape", "wrong dtype"],
    ids=["empty", "garbage", "wrong shape", "wrong dtype"],
)
def test_unreadable_cache_file_is_recomputed(tokenizer, tmp_path, counted, caplog, damage):
    expected = cached_tokenize(TEXTS, tokenizer, 8, tmp_path)
    (entry,) = (tmp_path / "tokens").glob("*.npy")
    if damage == "wrong shape":
        np.save(entry, expected[:, :4])
    elif damage == "wrong dtype":
        np.save(entry, expected.astype(np.int64))
    else:
        entry.write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="subpop_runner.data.tokens"):
        again = cached_tokenize(TEXTS, tokenizer, 8, tmp_path)
    assert np.array_equal(again, expected) and counted == [3, 3]
    assert "unreadable cache file" in caplog.text and str(entry) in caplog.text
    assert np.array_equal(np.load(entry), expected)  # rewritten whole


def test_vocabulary_digest_is_short_stable_and_follows_the_vocabulary(tokenizer, tmp_path):
    copy = load_tokenizer(str(write_tokenizer(tmp_path / "copy")), download=False)
    other = load_tokenizer(str(write_tokenizer(tmp_path / "o", [*WORDS, "x"])), download=False)
    digest = vocabulary_digest(tokenizer)
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert vocabulary_digest(copy) == digest and tokenizer_digest(copy) == tokenizer_digest(
        tokenizer
    )
    assert vocabulary_digest(other) != digest


def test_tokenizer_digest_ignores_the_truncation_a_call_leaves_behind(tokenizer):
    before = tokenizer_digest(tokenizer)
    tokenize(["great"], tokenizer, max_length=5)
    assert tokenizer_digest(tokenizer) == before


def test_a_folder_is_returned_as_is(tokenizer_dir):
    assert locate(str(tokenizer_dir), download=False) == str(tokenizer_dir)


def test_a_folder_without_model_or_tokenizer_files_names_the_fix(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="expected a folder holding config.json or tokenizer"):
        locate(str(tmp_path), download=False, key="dataset.tokenizer")


@pytest.mark.parametrize("name", ["/no/such/folder", "./missing", "not a name"])
def test_no_such_folder_nor_hub_name_names_the_fix(name):
    with pytest.raises(ConfigError, match="found neither; set it to the folder") as error:
        locate(name, download=False, key="dataset.tokenizer")
    assert str(error.value).startswith(f"dataset.tokenizer={name}: ")


def test_hub_name_not_cached_without_download_names_the_fix(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_tokenizer("nobody/no-such-tokenizer", download=False, key="dataset.tokenizer")
    message = str(error.value)
    assert "not in the local Hugging Face cache" in message and str(tmp_path / "hub") in message
    assert "set dataset.download=true on a machine that is online" in message
    assert "local folder" in message and "\n" not in message


def write_hub_cache(cache: Path, repo: str, source: Path) -> Path:
    """``repo`` in the layout huggingface_hub caches it: refs/main names a snapshot folder."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for file in source.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text("0123abcd")
    return snapshot


def test_a_cached_hub_name_is_used_without_the_network(tokenizer_dir, tmp_path, tokenizer):
    snapshot = write_hub_cache(tmp_path / "hub", "someone/tiny", tokenizer_dir)
    for download in (False, True):  # online too: the cached copy, no look-up
        assert Path(locate("someone/tiny", download=download)) == snapshot
    loaded = load_tokenizer("someone/tiny", download=False)
    assert vocabulary_digest(loaded) == vocabulary_digest(tokenizer)


def test_download_fetches_config_tokenizer_and_safetensors(tokenizer_dir, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def fake(repo_id, *, allow_patterns, local_files_only=False):
        calls.append((repo_id, local_files_only))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        assert {"*.json", "*.txt", "*.safetensors"} <= set(allow_patterns)
        return str(tokenizer_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    assert locate("someone/tiny", download=True) == str(tokenizer_dir)
    assert calls == [("someone/tiny", True), ("someone/tiny", False)]


def test_a_failed_fetch_names_the_fix(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def fake(repo_id, *, allow_patterns, local_files_only=False):
        raise LocalEntryNotFoundError("not cached") if local_files_only else OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    with pytest.raises(ConfigError, match="could not fetch it from the Hugging Face hub") as error:
        locate("someone/tiny", download=True, key="model.frozen.name")
    assert "OSError: offline" in str(error.value) and "local folder" in str(error.value)


def test_a_folder_with_only_a_model_config_has_no_tokenizer(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="expected tokenizer files .*found none"):
        load_tokenizer(str(tmp_path), download=False)


def test_a_damaged_tokenizer_file_is_one_config_error(tokenizer_dir, tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match="expected a tokenizer transformers can load"):
        load_tokenizer(str(tmp_path), download=False)


def test_a_tokenizer_of_special_tokens_only_is_refused(tmp_path):
    from transformers import BertTokenizerFast

    BertTokenizerFast().save_pretrained(tmp_path)  # what vocab_file= silently gives in v5
    with pytest.raises(ConfigError, match="expected a vocabulary, found only the special"):
        load_tokenizer(str(tmp_path), download=False)
