"""A defense inside the pipeline: the undefended numbers stay today's, a defense that keeps
everything changes nothing, and what it removed is compared with the provenance."""

from __future__ import annotations

import pytest

from subpop_runner import pipeline

from .conftest import small_adult_config

pytestmark = pytest.mark.slow


def test_a_defense_leaves_the_undefended_numbers_alone_and_keeping_all_changes_nothing(
    tmp_path,
):
    plain = pipeline.run(small_adult_config(tmp_path / "a", "selector.k=4"))
    kept = pipeline.run(
        small_adult_config(tmp_path / "b", "selector.k=4", "defense=trim", "defense.m=0")
    )
    for key in ("clean_accuracy", "target_damage/worst1", "target_damage/worst5"):
        assert kept.summary[key] == plain.summary[key]
    table = kept.subpops[kept.subpops["status"] == "attacked"]
    assert (table["defended_target_damage"] == table["target_damage"]).all()
    assert (table["removed_fraction"] == 0).all() and (table["defense_rounds"] == 0).all()
    assert kept.summary["target_damage_reduction/worst5"] == 0


def test_the_fine_pruning_holdout_is_left_out_of_every_metric(tmp_path):
    plain = pipeline.run(small_adult_config(tmp_path / "a", "selector.k=4"))
    pruned = pipeline.run(
        small_adult_config(
            tmp_path / "b", "selector.k=4", "defense=fine_pruning", "defense.holdout_fraction=0.2"
        )
    )
    full, measured = plain.subpops["test_size"].sum(), pruned.subpops["test_size"].sum()
    assert 0.7 * full < measured < 0.9 * full  # 20% of the test rows are the defender's
    attacked = pruned.subpops[pruned.subpops["status"] == "attacked"]
    assert attacked["pruned_target_damage"].notna().all()
    assert (attacked["removed_fraction"] == 0).all()  # fine-pruning removes no training row
    assert "pruned_target_damage/worst5" in pruned.summary
