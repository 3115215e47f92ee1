"""Cached pipeline stages: the clean victim, the surrogate's representation, the clustering.

Each stage's result (a few numpy arrays) is stored as ``<dir>/<stage>/<hash>.npz``, where the
hash covers exactly what determines it: the stage name, the seed, the config sections it
depends on and a fingerprint of subpop_runner's own source. So a multirun's jobs that differ
only in ``attack.alpha`` share one clean victim, surrogate and clustering, and changing
anything they depend on, the code that computes them included, computes them afresh. A
per-key file lock makes parallel jobs wait for the one computing a stage instead of computing
it twice; files are written to a temporary name and renamed, so a killed job never leaves a
half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from subpop_runner.errors import ConfigError

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


def stage_key(stage: str, parts: Mapping[str, Any]) -> str:
    """SHA-256 of the stage name, the code fingerprint and its inputs (JSON, sorted keys)."""
    text = json.dumps(
        {"stage": stage, "code": code_fingerprint(), **parts}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


@cache
def code_fingerprint(package: Path = Path(__file__).parent) -> str:
    """SHA-256 of the package's Python source: results computed by older code (say, another
    model implementation) are not reused, even where the version number did not change."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class StageCache:
    """Get-or-compute for pipeline stages; records whether each stage was a cache hit."""

    def __init__(self, *, enabled: bool = True, dir: str = ".cache/stages") -> None:
        if not isinstance(enabled, bool):
            raise ConfigError(f"cache.enabled must be true or false, got {enabled!r}")
        self.enabled = enabled
        self.dir = Path(dir).expanduser().resolve()
        self.outcome: dict[str, str] = {}

    def get(self, stage: str, parts: Mapping[str, Any], compute: Callable[[], Arrays]) -> Arrays:
        if not self.enabled:
            self.outcome[stage] = "disabled"
            return compute()
        key = stage_key(stage, parts)
        path = self.dir / stage / f"{key}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path.with_suffix(".lock"))):
            if path.is_file():
                self.outcome[stage] = "hit"
                log.info("cache hit: %s (%s)", stage, key[:12])
                with np.load(path, allow_pickle=False) as stored:
                    return {name: stored[name] for name in stored.files}
            self.outcome[stage] = "miss"
            result = compute()
            _write_atomically(path, result, parts)
            return result

    def tags(self) -> dict[str, str]:
        return {f"cache.{stage}": outcome for stage, outcome in self.outcome.items()}


def _write_atomically(path: Path, arrays: Arrays, parts: Mapping[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    path.with_suffix(".json").write_text(json.dumps(parts, indent=1, sort_keys=True, default=str))
