"""Digests of data files, for content-addressed cache keys and for checking published files.

A file is hashed once per process and algorithm while its size and timestamps stay the same,
so a multirun whose every job fingerprints its dataset reads each file once. The timestamps
include the change time (``st_ctime_ns``), which no user tool can set back, so even a restore
that keeps the old modification time (``cp -p``, ``touch -d``) is hashed afresh. (Only a
same-size rewrite within one tick of the file system's clock, a few milliseconds, would go
unseen.) MD5 is here only because some datasets publish nothing else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20  # stream large files (dataset tarballs of 100+ MB) in 1 MiB pieces

_memo: dict[tuple[Path, str], tuple[tuple[int, int, int, int], str]] = {}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the bytes of ``path``, memoised per (resolved path, size, mtime, ctime,
    inode)."""
    return _file_digest(path, "sha256")


def file_md5(path: Path) -> str:
    """Hex MD5 of the bytes of ``path``, memoised like `file_sha256`."""
    return _file_digest(path, "md5")


def _file_digest(path: Path, algorithm: str) -> str:
    resolved = Path(path).resolve()
    stat = resolved.stat()
    signature = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    known = _memo.get((resolved, algorithm))
    if known is not None and known[0] == signature:
        return known[1]
    digest = hashlib.new(algorithm)
    with open(resolved, "rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    _memo[(resolved, algorithm)] = (signature, digest.hexdigest())
    return digest.hexdigest()
