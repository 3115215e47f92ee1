import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import subpop_runner
from subpop_runner.cache import StageCache, code_fingerprint, module_closure, stage_key
from subpop_runner.errors import ConfigError

CODE = ("subpop_runner.training", "subpop_runner.models.mlp")


def counting(calls: list, value: float = 1.0, pause: float = 0.0):
    def compute():
        calls.append(1)
        time.sleep(pause)
        return {"a": np.full(3, value)}

    return compute


def test_second_get_is_a_hit_with_the_same_arrays(tmp_path):
    calls: list = []
    cache = StageCache(dir=str(tmp_path))
    first = cache.get("clean_victim", {"seed": 0}, counting(calls), code=CODE)
    assert cache.tags() == {"cache.clean_victim": "miss"}
    again = StageCache(dir=str(tmp_path))  # a later job, another process
    second = again.get("clean_victim", {"seed": 0}, counting(calls), code=CODE)
    assert again.tags() == {"cache.clean_victim": "hit"}
    assert len(calls) == 1 and np.array_equal(first["a"], second["a"])


def test_any_changed_dependency_recomputes(tmp_path):
    calls: list = []
    cache = StageCache(dir=str(tmp_path))
    for parts in (
        {"seed": 0, "model": {"l2": 1e-4}},
        {"seed": 1, "model": {"l2": 1e-4}},
        {"seed": 0, "model": {"l2": 1e-3}},
    ):
        cache.get("surrogate", parts, counting(calls), code=CODE)
    assert len(calls) == 3
    surrogate, clustering = (
        stage_key(s, {"seed": 0}, code=CODE) for s in ("surrogate", "clustering")
    )
    assert surrogate != clustering


def copy_package(folder: Path) -> Path:
    return Path(shutil.copytree(Path(subpop_runner.__file__).parent, folder / "subpop_runner"))


def test_code_key_follows_the_stage_modules_and_their_imports(tmp_path):
    original, edited = copy_package(tmp_path / "a"), copy_package(tmp_path / "b")
    # training imports data.splits, and so runs data/__init__.py: that file counts too
    with open(edited / "data" / "__init__.py", "a") as source:
        source.write("\n# another dataset\n")
    assert code_fingerprint(CODE, original) != code_fingerprint(CODE, edited)
    assert code_fingerprint(CODE, original) == code_fingerprint(CODE, copy_package(tmp_path / "c"))


def test_code_the_stage_does_not_import_leaves_the_key_alone(tmp_path):
    original, edited = copy_package(tmp_path / "a"), copy_package(tmp_path / "b")
    (edited / "selectors" / "new_selector.py").write_text(
        "from subpop_runner.data.epochs import Epoch\n"
    )
    with open(edited / "report.py", "a") as source:
        source.write("\n# another report\n")
    assert code_fingerprint(CODE, original) == code_fingerprint(CODE, edited)


def test_closure_follows_relative_from_and_function_level_imports(tmp_path):
    package = tmp_path / "subpop_runner"
    files = {
        "__init__.py": "",
        "stage.py": "from . import helper\n",
        "helper.py": "def f():\n    from .sub.leaf import g\n",
        "sub/__init__.py": "from subpop_runner import shared\n",
        "sub/leaf.py": "import numpy\nfrom ..errors import ConfigError\n",
        "shared.py": "",
        "errors.py": "",
        "unused.py": "",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    closure = module_closure(["subpop_runner.stage"], package)
    assert sorted(closure) == [
        f"subpop_runner{suffix}"
        for suffix in ("", ".errors", ".helper", ".shared", ".stage", ".sub", ".sub.leaf")
    ]
    assert closure["subpop_runner.sub"] == package / "sub" / "__init__.py"
    with pytest.raises(ValueError, match="no module subpop_runner.typo"):
        module_closure(["subpop_runner.typo"], package)


def test_disabled_cache_always_computes_and_says_so(tmp_path):
    calls: list = []
    cache = StageCache(enabled=False, dir=str(tmp_path))
    for _ in range(2):
        cache.get("clean_victim", {"seed": 0}, counting(calls), code=CODE)
    assert len(calls) == 2 and cache.tags() == {"cache.clean_victim": "disabled"}
    assert not any(tmp_path.iterdir())


def test_failed_stage_leaves_no_entry(tmp_path):
    def broken():
        raise RuntimeError("killed")

    cache = StageCache(dir=str(tmp_path))
    with pytest.raises(RuntimeError):
        cache.get("clean_victim", {"seed": 0}, broken, code=CODE)
    calls: list = []
    cache.get("clean_victim", {"seed": 0}, counting(calls), code=CODE)
    assert len(calls) == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_parallel_jobs_compute_a_stage_once(tmp_path):
    calls: list = []
    results: list = []

    def job():
        cache = StageCache(dir=str(tmp_path))
        arrays = cache.get("clean_victim", {"seed": 0}, counting(calls, pause=0.5), code=CODE)
        results.append(arrays["a"])

    threads = [threading.Thread(target=job) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 3


def write_valid_entry(folder: Path) -> Path:
    StageCache(dir=str(folder)).get("clean_victim", {"seed": 0}, counting([]), code=CODE)
    (entry,) = (folder / "clean_victim").glob("*.npz")
    return entry


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: data[: len(data) // 2],
        lambda data: b"\x93NUMPY garbage that is no zip file at all",
    ],
    ids=["empty", "truncated", "garbage"],
)
def test_unreadable_entry_is_reported_discarded_and_recomputed(tmp_path, caplog, damage):
    entry = write_valid_entry(tmp_path)
    entry.write_bytes(damage(entry.read_bytes()))
    calls: list = []
    cache = StageCache(dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="subpop_runner.cache"):
        result = cache.get("clean_victim", {"seed": 0}, counting(calls, 2.0), code=CODE)
    assert len(calls) == 1 and np.array_equal(result["a"], np.full(3, 2.0))
    assert cache.tags() == {"cache.clean_victim": "recomputed"}
    assert str(entry) in caplog.text and "unreadable cache entry" in caplog.text
    again = StageCache(dir=str(tmp_path))
    again.get("clean_victim", {"seed": 0}, counting(calls), code=CODE)
    assert again.tags() == {"cache.clean_victim": "hit"} and len(calls) == 1


def test_check_accepts_a_folder_it_can_create(tmp_path):
    StageCache(dir=str(tmp_path / "new" / "stages")).check()
    assert (tmp_path / "new" / "stages").is_dir()


@pytest.mark.parametrize("where", ["/proc/subpop_runner_cache", "{tmp}/file/stages"])
def test_check_rejects_a_folder_it_cannot_write(tmp_path, where):
    # Not a chmod-ed folder: tests may run as root, who can write there anyway.
    (tmp_path / "file").write_text("a regular file, not a folder")
    cache = StageCache(dir=where.format(tmp=tmp_path))
    with pytest.raises(ConfigError, match=r"cache\.dir=.* cannot be created or written") as error:
        cache.check()
    assert "set cache.dir to a writable folder" in str(error.value)
    assert "\n" not in str(error.value)


def test_check_of_a_disabled_cache_touches_nothing(tmp_path):
    StageCache(enabled=False, dir=str(tmp_path / "file" / "stages")).check()
    assert not (tmp_path / "file").exists()


def test_mapped_entry_comes_back_memory_mapped_read_only_and_equal(tmp_path):
    """BERT-LL's cached states: stored as .npy files, read back without loading them whole."""
    states = np.arange(2 * 3 * 4, dtype=np.float16).reshape(2, 3, 4)
    calls: list = []

    def compute():
        calls.append(1)
        return {"features": states, "empty": np.zeros((0, 3), np.float32)}

    first = StageCache(dir=str(tmp_path)).get(
        "features", {"k": 1}, compute, code=CODE, mapped=True
    )
    again = StageCache(dir=str(tmp_path))
    second = again.get("features", {"k": 1}, compute, code=CODE, mapped=True)
    assert len(calls) == 1 and again.tags() == {"cache.features": "hit"}
    for arrays in (first, second):
        assert isinstance(arrays["features"], np.memmap) and not arrays["features"].flags.writeable
        assert np.array_equal(arrays["features"], states) and arrays["empty"].shape == (0, 3)
    assert not list(tmp_path.rglob("*.tmp"))


def test_unreadable_mapped_entry_is_discarded_and_recomputed(tmp_path, caplog):
    compute = lambda: {"features": np.ones((50, 8), np.float16)}  # noqa: E731
    StageCache(dir=str(tmp_path)).get("features", {"k": 1}, compute, code=CODE, mapped=True)
    (stored,) = (tmp_path / "features").glob("*/features.npy")
    stored.write_bytes(stored.read_bytes()[:200])  # cut short
    cache = StageCache(dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="subpop_runner.cache"):
        result = cache.get("features", {"k": 1}, compute, code=CODE, mapped=True)
    assert cache.tags() == {"cache.features": "recomputed"}
    assert np.array_equal(result["features"], np.ones((50, 8))) and "unreadable" in caplog.text
