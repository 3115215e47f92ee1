import hashlib
import os
import time

from subpop_runner.data import digest
from subpop_runner.data.digest import file_sha256


def test_digest_is_the_sha256_of_the_bytes_in_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(digest, "CHUNK", 7)  # many pieces, the last one short
    data = bytes(range(256)) * 3
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_unchanged_file_is_not_read_again(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"adult")
    first = file_sha256(path)

    def no_reading(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr(digest, "open", no_reading, raising=False)
    assert file_sha256(path) == first
    assert file_sha256(tmp_path / "." / "f") == first  # same file, other spelling


def test_changed_file_is_read_again_even_with_its_old_size_and_mtime(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"adult")
    before = path.stat()
    first = file_sha256(path)
    time.sleep(0.05)  # file timestamps tick in steps of a few milliseconds
    path.write_bytes(b"ADULT")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` would
    assert file_sha256(path) == hashlib.sha256(b"ADULT").hexdigest() != first
