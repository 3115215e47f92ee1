"""Whole runs pinned: `pipeline.run` on the hand-made Adult rows (240 rows, 4 clusters, 3
epochs), undefended, under four defenses and with an optimising attack; every number it logs
(times aside) must stay what it was. A refactor of the pipeline or its components changes no
result, so these fail only on purpose. The values live in tests/pinned_runs.json; to update
them on purpose run this file with ``PIN=1`` in the environment (it rewrites the file), check
the diff, and commit it with the reason."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from subpop_runner import pipeline
from tests.conftest import write_adult_files
from tests.test_pipeline import tiny

pytestmark = pytest.mark.slow

SETTINGS = {
    "label_flip": [],
    "trim": ["defense=trim"],
    "sever": ["defense=sever"],
    "activation_clustering": ["defense=activation_clustering"],
    "fine_pruning": ["defense=fine_pruning", "defense.holdout_fraction=0.2"],
    "gradient_optimization": ["attack=gradient_optimization", "attack.steps=3"],
}
PINNED = Path(__file__).with_name("pinned_runs.json")


def summary(tmp_path: Path, overrides: list[str]) -> dict[str, float]:
    data = write_adult_files(tmp_path / "adult")
    cfg = tiny(tmp_path, data, f"cache.dir={tmp_path / 'stages'}", *overrides)
    numbers = pipeline.run(cfg).summary
    return {k: v for k, v in sorted(numbers.items()) if not k.endswith("_seconds")}


@pytest.mark.parametrize("setting", SETTINGS)
def test_a_run_logs_the_numbers_it_logged(tmp_path, setting):
    got = summary(tmp_path, SETTINGS[setting])
    pinned = json.loads(PINNED.read_text())
    if os.environ.get("PIN"):
        PINNED.write_text(json.dumps(pinned | {setting: got}, indent=1, sort_keys=True) + "\n")
        return
    moved = [
        f"{key}: pinned {pinned[setting].get(key)!r}, now {got.get(key)!r}"
        for key in sorted(set(pinned[setting]) | set(got))
        if not same(pinned[setting].get(key), got.get(key))
    ]
    assert not moved, f"{setting}: " + "; ".join(moved)


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
