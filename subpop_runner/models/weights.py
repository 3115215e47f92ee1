"""Loading a network's published weights from a URL or a local file, checked before use.

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a
weights file cannot run code. Published file names carry the first hex digits of their SHA-256
between a dash and a dot (torchvision's ``vgg16-397923af.pth``, as ``torch.hub`` checks them; at
least 8 digits here); such a file is loaded only if its bytes match. A URL is downloaded once
into the torch hub cache and checked the same way, on download and on every later load.

Every failure is a `ConfigError` naming the file and the fix.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from subpop_runner.data.digest import file_sha256
from subpop_runner.errors import ConfigError

log = logging.getLogger(__name__)

URL_SCHEMES = ("http", "https", "file")
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.")
FIX = "give a local .pth file, a URL, or null for random init"


def load_weights(
    module: nn.Module, source: str | os.PathLike, cache_dir: Path | None = None
) -> None:
    """Load the state dict at ``source`` (URL or path) into ``module``; every key and shape
    must match. ``cache_dir`` holds downloads (default: torch hub's ``checkpoints`` folder)."""
    state = read_state_dict(source, cache_dir)
    check_fits(module, state, str(source))
    module.load_state_dict(state)
    log.info("loaded weights %s into %s", source, type(module).__name__)


def read_state_dict(source: str | os.PathLike, cache_dir: Path | None = None) -> dict[str, Tensor]:
    """The state dict at ``source``, a URL (downloaded once) or a local file, on the CPU."""
    source = str(source)
    path = _download(source, cache_dir) if urlparse(source).scheme in URL_SCHEMES else Path(source)
    if not path.is_file():
        raise ConfigError(f"model weights: {path} not found; {FIX}")
    mismatch = hash_mismatch(path)
    if mismatch:
        raise ConfigError(
            f"model weights: {path} {mismatch}; delete it and download the published file again"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a refused object, a truncated archive, not a torch file, ...
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:
            raise ConfigError(
                f"model weights: {path} holds {refused.group(1)}, which weights_only loading "
                f"refuses to unpickle; save model.state_dict() instead, or {FIX}"
            ) from error
        # torch's own advice (load with weights_only=False) is not one to pass on.
        unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        reason = unpickler.group(1) if unpickler else str(error).splitlines()[0]
        raise ConfigError(
            f"model weights: {path} is not a readable state dict ({reason}); {FIX}"
        ) from error
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(
            f"model weights: {path} holds a {type(state).__name__}, not a state dict of "
            f"tensors; save model.state_dict() instead, or {FIX}"
        )
    return dict(state)


def hash_mismatch(path: Path) -> str | None:
    """How ``path``'s SHA-256 differs from the hex digits its name carries; None if it
    matches or the name carries none."""
    found = HASH_IN_NAME.search(path.name)
    if found is None:
        return None
    digest = file_sha256(path)
    if digest.startswith(found.group(1)):
        return None
    return f"has SHA-256 {digest[:16]}…, not the {found.group(1)}… its name promises"


def check_fits(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """ConfigError listing missing and unexpected keys and wrong shapes, in one line."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{len(found)} {what} ({_first(found)})"
        for what, found in [
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shapes differ, file vs model", shapes),
        ]
        if found
    ]
    if problems:
        raise ConfigError(
            f"model weights: {source} does not fit {type(module).__name__}: "
            f"{'; '.join(problems)}; give the file published for this architecture or {FIX}"
        )


def _first(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", …" if len(items) > n else "")


def _download(url: str, cache_dir: Path | None) -> Path:
    """Local copy of ``url`` in ``cache_dir``, downloaded if absent and checked by name."""
    folder = Path(cache_dir or Path(torch.hub.get_dir()) / "checkpoints")
    target = folder / Path(urlparse(url).path).name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    log.info("downloading %s to %s", url, target)
    try:
        torch.hub.download_url_to_file(url, str(partial), progress=False)
    except OSError as error:  # urllib's URLError and HTTPError included
        raise ConfigError(
            f"model weights: could not download {url} ({error}); download it elsewhere and "
            f"give its local path, or null for random init"
        ) from error
    mismatch = hash_mismatch(partial)  # "name-<hash>.pth.part" still carries the hash
    if mismatch:
        partial.unlink()
        raise ConfigError(
            f"model weights: the download of {url} {mismatch} (deleted); check the URL, "
            "or download the file elsewhere and give its local path"
        )
    partial.replace(target)
    return target
