"""A cached stage, as the pipeline hands it to selectors and training regimes:
``memo(stage, key_parts, compute, mapped=False)`` returns compute()'s arrays, from the stage
cache when the same key was computed before (`subpop_runner.cache`); ``mapped`` ones may come
back memory-mapped and read-only."""

from __future__ import annotations

from collections.abc import Callable

Memo = Callable[..., dict]


def no_memo(stage: str, parts: dict, compute: Callable[[], dict], mapped: bool = False) -> dict:
    """Compute without caching (what `StageCache.get` does when the cache is off)."""
    return compute()
