import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import subpop_runner
from subpop_runner.cache import StageCache, code_fingerprint, stage_key


def counting(calls: list, value: float = 1.0, pause: float = 0.0):
    def compute():
        calls.append(1)
        time.sleep(pause)
        return {"a": np.full(3, value)}

    return compute


def test_second_get_is_a_hit_with_the_same_arrays(tmp_path):
    calls: list = []
    cache = StageCache(dir=str(tmp_path))
    first = cache.get("clean_victim", {"seed": 0}, counting(calls))
    assert cache.tags() == {"cache.clean_victim": "miss"}
    again = StageCache(dir=str(tmp_path))  # a later job, another process
    second = again.get("clean_victim", {"seed": 0}, counting(calls))
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
        cache.get("surrogate", parts, counting(calls))
    assert len(calls) == 3
    assert stage_key("surrogate", {"seed": 0}) != stage_key("clustering", {"seed": 0})


def test_changed_code_changes_the_fingerprint(tmp_path):
    package = Path(subpop_runner.__file__).parent
    copy = shutil.copytree(package, tmp_path / "subpop_runner")
    assert code_fingerprint(copy) == code_fingerprint(package)
    with open(copy / "models" / "mlp.py", "a") as source:
        source.write("\n# a different model\n")
    assert code_fingerprint.__wrapped__(copy) != code_fingerprint(package)


def test_disabled_cache_always_computes_and_says_so(tmp_path):
    calls: list = []
    cache = StageCache(enabled=False, dir=str(tmp_path))
    for _ in range(2):
        cache.get("clean_victim", {"seed": 0}, counting(calls))
    assert len(calls) == 2 and cache.tags() == {"cache.clean_victim": "disabled"}
    assert not any(tmp_path.iterdir())


def test_failed_stage_leaves_no_entry(tmp_path):
    def broken():
        raise RuntimeError("killed")

    cache = StageCache(dir=str(tmp_path))
    with pytest.raises(RuntimeError):
        cache.get("clean_victim", {"seed": 0}, broken)
    calls: list = []
    cache.get("clean_victim", {"seed": 0}, counting(calls))
    assert len(calls) == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_parallel_jobs_compute_a_stage_once(tmp_path):
    calls: list = []
    results: list = []

    def job():
        cache = StageCache(dir=str(tmp_path))
        results.append(cache.get("clean_victim", {"seed": 0}, counting(calls, pause=0.5))["a"])

    threads = [threading.Thread(target=job) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 3
