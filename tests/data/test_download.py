import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from subpop_runner.data.download import download, extract_tar
from subpop_runner.errors import ConfigError


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "served" / "file.bin"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 10)
    return path


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_download_from_a_file_url_with_the_right_checksum(source, tmp_path, algorithm):
    expected = hashlib.new(algorithm, source.read_bytes()).hexdigest()
    target = tmp_path / "dl" / "file.bin"
    assert download(source.as_uri(), target, **{algorithm: expected}) == target
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_wrong_checksum_names_the_file_and_leaves_nothing(source, tmp_path):
    with pytest.raises(ConfigError, match="checksum mismatch for file.bin") as error:
        download(source.as_uri(), tmp_path / "dl" / "file.bin", md5="0" * 32, fix="do X")
    assert f"expected md5 {'0' * 32}" in str(error.value)
    assert str(error.value).endswith("check dataset.url, or do X")
    assert not any((tmp_path / "dl").iterdir())


def test_a_verified_copy_is_not_fetched_again(source, tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(source.read_bytes())
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    assert download("file:///nonexistent/file.bin", target, sha256=sha) == target


def test_a_copy_with_another_checksum_is_replaced(source, tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"stale")
    download(source.as_uri(), target, sha256=hashlib.sha256(source.read_bytes()).hexdigest())
    assert target.read_bytes() == source.read_bytes()


def test_unreachable_url_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="could not download .*; set data_dir by hand"):
        download(
            "file:///nonexistent/x", tmp_path / "x", sha256="0" * 64, fix="set data_dir by hand"
        )
    assert list(tmp_path.iterdir()) == []


def test_exactly_one_checksum_is_required(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        download("file:///x", tmp_path / "x")
    with pytest.raises(ValueError, match="exactly one"):
        download("file:///x", tmp_path / "x", sha256="a", md5="b")


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_extracts_an_ordinary_archive(tmp_path):
    archive = make_tar(
        tmp_path / "a.tar.gz",
        [(member("top", tarfile.DIRTYPE), b""), (member("top/f.txt"), b"hello")],
    )
    extract_tar(archive, tmp_path / "out")
    assert (tmp_path / "out" / "top" / "f.txt").read_bytes() == b"hello"


ESCAPES = {
    "absolute path": (member("/tmp/subpop_escape.txt"), "would be written outside"),
    "dot-dot": (member("top/../../escape.txt"), "would be written outside"),
    "symlink out": (member("top/link", tarfile.SYMTYPE, "../../outside"), "links to"),
    "absolute symlink": (member("link", tarfile.SYMTYPE, "/etc/passwd"), "links to"),
    "hardlink out": (member("hard", tarfile.LNKTYPE, "../outside.txt"), "links to"),
    "fifo": (member("pipe", tarfile.FIFOTYPE), "device or pipe"),
}


@pytest.mark.parametrize("case", ESCAPES, ids=list(ESCAPES))
def test_member_escaping_the_folder_is_refused_before_anything_is_written(tmp_path, case):
    info, problem = ESCAPES[case]
    archive = make_tar(tmp_path / "evil.tar.gz", [(member("first.txt"), b"x"), (info, b"evil")])
    out = tmp_path / "deep" / "out"
    with pytest.raises(ConfigError, match=problem) as error:
        extract_tar(archive, out)
    assert str(archive) in str(error.value) and "\n" not in str(error.value)
    assert list(out.iterdir()) == []  # not even the harmless first member
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "deep" / "outside").exists()


@pytest.mark.parametrize("data", [b"", b"not a tar archive at all" * 40])
def test_unreadable_archive_is_one_config_error(tmp_path, data):
    (tmp_path / "bad.tar.gz").write_bytes(data)
    with pytest.raises(ConfigError, match="could not unpack .*bad.tar.gz"):
        extract_tar(tmp_path / "bad.tar.gz", tmp_path / "out")


def test_truncated_archive_is_one_config_error(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", [(member("f.bin"), bytes(range(256)) * 400)])
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(ConfigError, match="could not unpack"):
        extract_tar(archive, tmp_path / "out")
