"""Fetching dataset files: checksummed downloads and safe unpacking of tar archives.

A download is written to a temporary file beside its target and renamed only once its checksum
matches, so an interrupted or wrong download never leaves a file that looks complete, and jobs
downloading the same file at once do not write into each other's copy. An archive is unpacked
only if none of its members could land outside the target folder (absolute names, ``..``,
links pointing out, device files): refused before anything is written, and again by the
``tarfile`` data filter where this Python has it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

from subpop_runner.data.digest import file_md5, file_sha256
from subpop_runner.errors import ConfigError

log = logging.getLogger(__name__)

BY_HAND = "download it by hand and set dataset.data_dir to its folder"


def download(
    url: str,
    target: Path,
    sha256: str | None = None,
    *,
    md5: str | None = None,
    fix: str = BY_HAND,
) -> Path:
    """Fetch ``url`` to ``target`` unless a copy with the expected checksum is there already.

    Give exactly one of ``sha256`` and ``md5`` (the digest the dataset publishes). ``fix`` ends
    the error message when the download fails or its checksum does not match.
    """
    if (sha256 is None) == (md5 is None):
        raise ValueError("give exactly one of sha256 and md5")
    algorithm, expected = ("sha256", sha256) if sha256 is not None else ("md5", md5)
    digest = file_sha256 if algorithm == "sha256" else file_md5
    if target.is_file() and digest(target) == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    partial = Path(name)
    log.info("downloading %s", url)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        found = digest(partial)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"could not download {url} ({error}); {fix}") from error
    if found != expected:
        partial.unlink()
        raise ConfigError(
            f"checksum mismatch for {target.name} from {url}: expected {algorithm} {expected}, "
            f"found {found}; check dataset.url, or {fix}"
        )
    partial.replace(target)
    return target


def extract_tar(archive: Path, folder: Path) -> None:
    """Unpack the tar archive ``archive`` (any compression) into ``folder``; a member that
    would land outside ``folder``, or an unreadable archive, is a `ConfigError`."""
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _refuse_escape(archive, member, root)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, members=members, filter="data")
            else:  # Python < 3.11.4: our own check above is all there is
                tar.extractall(root, members=members)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise ConfigError(
            f"could not unpack {archive} into {folder} ({error}); delete the archive so that "
            "it is downloaded again"
        ) from error


def _refuse_escape(archive: Path, member: tarfile.TarInfo, root: Path) -> None:
    """Raise if ``member`` would be written, or would link, outside ``root``."""
    # resolve() also follows links already in the folder, which could lead out of it.
    path = (root / member.name).resolve()
    if member.issym():
        # A symbolic link is read relative to the folder it lies in; a hard link's name is
        # relative to the archive's root.
        points_to = (path.parent / member.linkname).resolve()
    elif member.islnk():
        points_to = (root / member.linkname).resolve()
    else:
        points_to = path
    if not member.isfile() and not member.isdir() and not member.issym() and not member.islnk():
        problem = "is a device or pipe"
    elif os.path.isabs(member.name) or not path.is_relative_to(root):
        problem = "would be written outside the folder"
    elif not points_to.is_relative_to(root):
        problem = f"links to {member.linkname!r}, outside the folder"
    else:
        return
    raise ConfigError(
        f"{archive}: member {member.name!r} {problem}; refusing to unpack it. Delete the "
        "archive and download the original"
    )
