"""Cached pipeline stages: the clean victim, the surrogate's representation, the clustering.

Each stage's result (a few numpy arrays) is stored as ``<dir>/<stage>/<hash>.npz``, where the
hash covers exactly what determines it: the stage name, the inputs the caller passes (seed,
config sections, the dataset's content fingerprint) and the source of the code the stage
runs: the modules it names plus every ``subpop_runner`` module they import, transitively. So
a multirun's jobs that differ only in ``attack.alpha`` share one clean victim, surrogate and
clustering; changing anything a stage depends on, its code included, computes it afresh;
and code it does not run (say, a new selector) leaves its entries valid.

A per-key file lock makes parallel jobs wait for the one computing a stage instead of
computing it twice; files are written to a temporary name and renamed, so a killed job never
leaves a half-written entry. An entry that still cannot be read (truncated or overwritten on
disk) is logged as a warning, deleted and computed again (outcome ``recomputed``).
`StageCache.check` tells before any work whether the cache folder is writable.

A stage whose arrays are too large to hold in memory (BERT-LL's cached hidden states: 4.6 GiB
for 25k reviews at 256 tokens) asks for a ``mapped`` entry: a folder ``<hash>/`` of one ``.npy``
file per array, read back memory-mapped (read-only), so a job touches only the rows it reads.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sysconfig
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from subpop_runner.errors import ConfigError

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
PACKAGE = "subpop_runner"
PACKAGE_DIR = Path(__file__).parent
# What np.load raises for a file that is not a complete .npz: empty (EOFError), cut short
# (BadZipFile), other bytes (ValueError, as pickles are refused), unreadable (OSError).
UNREADABLE = (OSError, EOFError, ValueError, zipfile.BadZipFile)
# Where installed packages and the standard library live (`sysconfig` path names): their code
# is pinned by the lock and the interpreter, not hashed.
INSTALLED_PATHS = ("purelib", "platlib", "stdlib", "platstdlib")


def stage_key(stage: str, parts: Mapping[str, Any], *, code: Sequence[str]) -> str:
    """SHA-256 of the stage name, the fingerprint of the ``code`` modules it runs and its
    inputs (JSON, sorted keys)."""
    fingerprint = code_fingerprint(tuple(sorted(set(code))))
    text = json.dumps({"stage": stage, "code": fingerprint, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@cache
def code_fingerprint(modules: tuple[str, ...], package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 of the source of ``modules`` and of every ``subpop_runner`` module they import,
    transitively (see `module_closure`): results computed by other code are not reused, even
    where the version number did not change. Memoised: a process runs the code it imported."""
    digest = hashlib.sha256()
    for name, path in sorted(module_closure(modules, package_dir).items()):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def module_closure(modules: Iterable[str], package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Source file of each of ``modules`` and of each ``subpop_runner`` module they import, by
    module name, found by parsing (nothing is imported). Follows absolute and relative imports
    anywhere in a file (function-level and ``TYPE_CHECKING`` ones too), ``from package import
    module``, and the ``__init__`` of every package on the way, which importing runs.

    A module outside the package is a user's own component (a plugin found on the Python path,
    `user_source`): its file counts, and so do the user modules and ``subpop_runner`` modules
    it imports; installed packages and the standard library are pinned by the lock instead."""
    found: dict[str, Path] = {}
    pending = list(modules)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        ours = name == PACKAGE or name.startswith(PACKAGE + ".")
        path = _source(name, package_dir) if ours else user_source(name)
        if path is None and ours:
            raise ValueError(f"no module {name} in {package_dir}")
        if path is None:
            continue
        found[name] = path
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        pending += parents + _imports(name, path, package_dir, everything=not ours)
    return found


def user_source(name: str) -> Path | None:
    """The source file of module ``name`` when it is a user's own: on the Python path but
    outside this package, the installed packages and the standard library; else None."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin).resolve()
    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in INSTALLED_PATHS}
    if any(path.is_relative_to(root) for root in installed | {PACKAGE_DIR}):
        return None
    return path


def _imports(name: str, path: Path, package_dir: Path, everything: bool = False) -> list[str]:
    """The ``subpop_runner`` modules that the file of module ``name`` imports (``everything``:
    every module it imports, for a user's file)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.append(base)
            # `from package import name` imports a submodule when there is one by that name.
            names += [
                f"{base}.{alias.name}"
                for alias in node.names
                if _source(f"{base}.{alias.name}", package_dir) is not None
            ]
    return [n for n in names if everything or n == PACKAGE or n.startswith(PACKAGE + ".")]


def _source(name: str, package_dir: Path) -> Path | None:
    """The file defining module ``name`` (``subpop_runner.x.y``) under ``package_dir``."""
    head, *rest = name.split(".")
    if head != PACKAGE:
        return None
    stem = package_dir.joinpath(*rest)
    for candidate in (stem.with_suffix(".py") if rest else None, stem / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


class StageCache:
    """Get-or-compute for pipeline stages; records how each stage was obtained."""

    def __init__(self, *, enabled: bool = True, dir: str = ".cache/stages") -> None:
        self.enabled = enabled
        self.dir = Path(dir).expanduser().resolve()
        self.outcome: dict[str, str] = {}

    def check(self) -> None:
        """Raise `ConfigError` unless the cache folder can be created and written (nothing to
        check when the cache is disabled)."""
        if not self.enabled:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.dir):
                pass
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise ConfigError(
                f"cache.dir={self.dir} cannot be created or written ({reason}); set cache.dir "
                "to a writable folder, or cache.enabled=false"
            ) from None

    def get(
        self,
        stage: str,
        parts: Mapping[str, Any],
        compute: Callable[[], Arrays],
        *,
        code: Sequence[str],
        mapped: bool = False,
    ) -> Arrays:
        """The stage's arrays, from the cache or ``compute()``; ``code`` names the modules the
        stage runs (``subpop_runner.…``), whose import closure is part of the key; ``mapped``
        arrays come back memory-mapped and read-only, as stored. The outcome is ``disabled``,
        ``hit``, ``miss`` or ``recomputed`` (an unreadable entry replaced)."""
        if not self.enabled:
            self.outcome[stage] = "disabled"
            return compute()
        key = stage_key(stage, parts, code=code)
        path = self.dir / stage / (key if mapped else f"{key}.npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path.parent / f"{key}.lock")):
            self.outcome[stage] = "miss"
            if path.exists():
                stored = _read(path)
                if stored is not None:
                    self.outcome[stage] = "hit"
                    log.info("cache hit: %s (%s)", stage, key[:12])
                    return stored
                self.outcome[stage] = "recomputed"
            result = compute()
            _write_atomically(path, result, parts, mapped)
            return _read(path) if mapped else result

    def tags(self) -> dict[str, str]:
        return {f"cache.{stage}": outcome for stage, outcome in self.outcome.items()}


def _read(path: Path) -> Arrays | None:
    """The arrays of an entry (memory-mapped from a mapped entry's folder), or None (after a
    warning, the entry deleted) if it cannot be read back: computing it again is the fix, and a
    bad file must not fail every later run."""
    try:
        if path.is_dir():
            return {
                file.stem: np.load(file, mmap_mode="r", allow_pickle=False)
                for file in sorted(path.glob("*.npy"))
            }
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except UNREADABLE as error:
        log.warning("unreadable cache entry %s (%r): deleted, computing it again", path, error)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        return None


def _write_atomically(path: Path, arrays: Arrays, parts: Mapping[str, Any], mapped: bool) -> None:
    """The entry written under a temporary name, then renamed into place: a ``.npz`` file, or
    for a ``mapped`` entry a folder of ``.npy`` files."""
    if mapped:
        temporary = tempfile.mkdtemp(dir=path.parent, suffix=".tmp")
        try:
            for name, array in arrays.items():
                np.save(Path(temporary) / f"{name}.npy", array, allow_pickle=False)
            os.replace(temporary, path)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
    else:
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, **arrays)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    path.with_suffix(".json").write_text(json.dumps(parts, indent=1, sort_keys=True, default=str))
