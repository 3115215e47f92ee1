import numpy as np
import pandas as pd
import pytest

from subpop_runner.defenses.base import Defended
from subpop_runner.metrics import (
    damage,
    defense_details,
    subpop_table,
    summarize,
    with_defense,
)
from subpop_runner.types import PoisonSet, Selection, Subpopulation


def test_damage_on_a_hand_made_case():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    clean = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 1])  # 3/4 in S, 5/6 outside
    poisoned = np.array([0, 0, 1, 0, 0, 0, 0, 0, 1, 1])  # 1/4 in S, 4/6 outside
    in_s = np.array([True] * 4 + [False] * 6)
    out = damage(clean, poisoned, y, in_s)
    assert out["target_damage"] == pytest.approx(0.75 - 0.25)
    assert out["collateral_damage"] == pytest.approx(5 / 6 - 4 / 6)


def test_worst_k_means_the_k_largest_target_damages():
    damages = [0.5, -0.1, 0.3, 0.2, 0.1, 0.0, 0.4]
    table = pd.DataFrame(
        {
            "status": ["attacked"] * 7 + ["no test points"],
            "target_damage": damages + [np.nan],
            "collateral_damage": [0.01 * i for i in range(7)] + [np.nan],
            "aux_size": [10, 20, 30, 40, 50, 60, 70, 5],
            "test_size": [1] * 8,
            "poison_count": [1] * 8,
        }
    )
    summary = summarize(table, clean_accuracy=0.85)
    assert summary["target_damage/worst1"] == pytest.approx(0.5)
    assert summary["target_damage/worst5"] == pytest.approx((0.5 + 0.4 + 0.3 + 0.2 + 0.1) / 5)
    assert summary["target_damage/worst10"] == pytest.approx(np.mean(damages))
    # worst 5 are rows 0, 6, 2, 3, 4: collateral 0.00, 0.06, 0.02, 0.03, 0.04
    assert summary["collateral_damage/worst5"] == pytest.approx(0.03)
    assert summary["subpop_size_aux/worst1"] == 10
    assert summary["subpops/no_test_points"] == 1 and summary["subpops/attacked"] == 7


def test_worst_k_and_their_sizes_come_from_attacked_rows_only():
    damages = [0.5, -0.1, 0.3, 0.2, 0.1, 0.0, 0.4]
    collateral = [0.07, 0.5, 0.01, 0.02, 0.03, 0.4, 0.05]
    table = pd.DataFrame(
        {
            "status": ["attacked"] * 7 + ["not selected", "no test points"],
            "target_damage": damages + [np.nan, np.nan],
            "collateral_damage": collateral + [np.nan, np.nan],
            "aux_size": [10, 20, 30, 40, 50, 60, 70, 1000, 2000],
            "test_size": [1, 2, 3, 4, 5, 6, 7, 100, 0],
            "poison_count": [5, 10, 15, 20, 25, 30, 35, np.nan, np.nan],
        }
    )
    summary = summarize(table, clean_accuracy=0.85)
    # worst 5 by target damage are rows 0, 6, 2, 3, 4 (not the first five rows, not all)
    assert summary["collateral_damage/worst5"] == pytest.approx((0.07 + 0.05 + 0.06) / 5)
    assert summary["subpop_size_aux/worst5"] == pytest.approx((10 + 70 + 30 + 40 + 50) / 5)
    # fewer than 10 attacked: worst 10 is every attacked row, and nothing else
    assert summary["subpop_size_aux/worst10"] == pytest.approx(40)
    assert summary["subpop_size_test/worst10"] == pytest.approx(4)
    assert summary["poison_count/worst10"] == pytest.approx(20)
    assert summary["target_damage/mean"] == pytest.approx(np.mean(damages))
    assert summary["subpops/candidates"] == 9 and summary["subpops/no_test_points"] == 1


def subpop(
    id: int, test: list[int], n_test: int = 6, train: list[int] | None = None, n_train: int = 4
) -> Subpopulation:
    def mask(members: list[int], n: int) -> np.ndarray:
        out = np.zeros(n, bool)
        out[members] = True
        return out

    return Subpopulation(
        id=id,
        description=f"s{id}",
        aux=np.ones(4, bool),
        train=mask(range(n_train) if train is None else train, n_train),
        test=mask(test, n_test),
        clean_confidence=0.1 * id,
    )


def poison_set(subpop_id: int, n: int, label: int = 1) -> PoisonSet:
    return PoisonSet(
        subpop_id, np.zeros((n, 1)), np.full(n, label, np.int64), np.arange(n, dtype=np.int64)
    )


def test_subpop_table_measures_each_subpop_against_its_own_victim():
    y = np.array([0, 1, 0, 1, 0, 1])
    candidates = [subpop(0, [0, 1]), subpop(1, [4, 5]), subpop(2, [2, 3]), subpop(3, [])]
    status = {0: "attacked", 1: "not selected", 2: "attacked", 3: "no test points"}
    poison = [poison_set(2, 3, label=1), poison_set(0, 5, label=0)]  # not in candidate order
    poisoned = np.array(
        [
            [0, 1, 1, 0, 0, 1],  # victim of subpop 2: wrong on its two test points
            [1, 0, 0, 1, 0, 0],  # victim of subpop 0: wrong on its two, and on point 5
        ]
    )
    table = subpop_table(Selection(candidates, status), poison, y, poisoned, y).set_index("id")
    assert list(table.index) == [0, 1, 2, 3]  # every candidate has a row
    assert table.loc[0, "target_damage"] == 1.0 and table.loc[0, "collateral_damage"] == 0.25
    assert table.loc[2, "target_damage"] == 1.0 and table.loc[2, "collateral_damage"] == 0.0
    assert table.loc[0, "poison_count"] == 5 and table.loc[2, "flip_label"] == 1
    assert table.loc[3, "status"] == "no test points" and table.loc[3, "test_size"] == 0
    assert table.loc[[1, 3], "target_damage"].isna().all()
    # what subpops.csv says of each candidate stays on its own row
    assert list(table["description"]) == ["s0", "s1", "s2", "s3"]
    assert list(table["clean_confidence"]) == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_flip_label_of_a_one_point_poison_and_of_a_budget_rounded_to_zero():
    y = np.array([0, 1, 0, 1, 0, 1])
    candidates = [subpop(0, [0, 1]), subpop(1, [2, 3])]
    status = {0: "attacked", 1: "attacked"}
    table = subpop_table(
        Selection(candidates, status), [poison_set(0, 1), poison_set(1, 0)], y, [y, y], y
    ).set_index("id")
    assert table.loc[0, "poison_count"] == 1 and table.loc[0, "flip_label"] == 1
    assert table.loc[1, "poison_count"] == 0 and pd.isna(table.loc[1, "flip_label"])
    assert table.loc[1, "target_damage"] == 0.0  # still measured: its victim is the clean one


def test_a_subpopulation_holding_every_test_point_has_no_collateral():
    y = np.array([1, 1, 0, 0])
    out = damage(y, np.array([1, 0, 0, 1]), y, np.ones(4, bool))
    assert out["target_damage"] == pytest.approx(0.5)
    assert np.isnan(out["clean_acc_collateral"]) and np.isnan(out["collateral_damage"])


def test_tied_damages_enter_the_worst_k_in_the_tables_order():
    """Damage on a few test points ties often. Of 40 subpopulations every third has the top
    damage: the worst 5 are the first five of those in the table's (the ranking's) order, so
    their sizes and collateral do not depend on how a sort breaks ties."""
    rows = np.arange(40)
    table = pd.DataFrame(
        {
            "status": "attacked",
            "target_damage": np.where(rows % 3 == 0, 0.5, 0.25),
            "collateral_damage": rows / 100,
            "aux_size": rows,
            "test_size": 1,
            "poison_count": 1,
        }
    )
    summary = summarize(table, clean_accuracy=0.85)
    assert summary["subpop_size_aux/worst5"] == pytest.approx(np.mean([0, 3, 6, 9, 12]))
    assert summary["collateral_damage/worst5"] == pytest.approx(0.06)
    assert summary["subpop_size_aux/worst10"] == pytest.approx(np.mean(rows[::3][:10]))


def defended_case():
    """Two attacked subpopulations on 6 train and 6 test rows, their victims in the other
    order than the candidates. Subpopulation 1 (train rows 3, 4): the defense removed one of
    its 2 poisons and clean rows 0, 1, 2 (outside S) and 3 (in S). Subpopulation 0 (train rows
    0-2): all 4 poisons and no clean row. The clean victim is right everywhere."""
    y = np.array([0, 1, 0, 1, 0, 1])
    candidates = [
        subpop(0, [0, 1], train=[0, 1, 2], n_train=6),
        subpop(1, [2, 3], train=[3, 4], n_train=6),
        subpop(2, [4], train=[5], n_train=6),
    ]
    selection = Selection(candidates, {0: "attacked", 1: "attacked", 2: "not selected"})
    poisons = [poison_set(1, 2), poison_set(0, 4)]
    keep = [
        np.array([0, 0, 0, 0, 1, 1] + [0, 1], bool),
        np.array([1, 1, 1, 1, 1, 1] + [0, 0, 0, 0], bool),
    ]
    defended = Defended(keep=keep, score=[np.zeros(8), np.zeros(10)], rounds=[3, 1], victims=None)
    predictions = {
        "defended": np.array([[0, 1, 1, 1, 0, 0], [0, 1, 0, 1, 0, 1]]),
        "pruned": np.array([[0, 1, 1, 0, 0, 1], [1, 1, 0, 1, 0, 1]]),
    }
    poisoned = np.array([[0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 1]])
    table = subpop_table(selection, poisons, y, poisoned, y)
    return with_defense(table, selection, poisons, keep, defended, y, predictions, y)


def test_what_the_defense_removed_is_scored_against_each_victims_own_poison():
    table = defended_case().set_index("id")
    one, zero = table.loc[1], table.loc[0]
    assert one["poison_found"] == 0.5 and one["poison_precision"] == pytest.approx(1 / 5)
    assert one["removed_fraction"] == pytest.approx(5 / 8)
    assert one["clean_removed_in_subpop"] == 0.5  # row 3 of rows 3, 4
    assert one["clean_removed_outside"] == 0.75  # rows 0, 1, 2 of rows 0, 1, 2, 5
    assert one["defense_rounds"] == 3
    assert zero["poison_found"] == 1.0 and zero["poison_precision"] == 1.0
    assert zero["removed_fraction"] == 0.4 and zero["defense_rounds"] == 1
    assert zero["clean_removed_in_subpop"] == 0.0 and zero["clean_removed_outside"] == 0.0
    assert table.loc[2, ["poison_found", "defended_target_damage"]].isna().all()


def test_the_defended_and_pruned_victims_are_measured_on_their_own_subpopulation():
    table = defended_case().set_index("id")
    # victim of S1 (test points 2, 3): defended wrong on 2, and on 5 outside; pruned on 2, 3
    assert table.loc[1, "defended_target_damage"] == 0.5
    assert table.loc[1, "defended_collateral_damage"] == 0.25
    assert table.loc[1, "defended_accuracy"] == pytest.approx(4 / 6)
    assert table.loc[1, "pruned_target_damage"] == 1.0
    assert table.loc[1, "pruned_collateral_damage"] == 0.0
    # victim of S0 (test points 0, 1): defended right everywhere; pruned wrong on 0
    assert table.loc[0, "defended_target_damage"] == 0.0
    assert table.loc[0, "defended_accuracy"] == 1.0
    assert table.loc[0, "pruned_target_damage"] == 0.5
    assert table.loc[1, "target_damage"] == 1.0  # the undefended damage stays beside them


def test_a_defense_that_removed_nothing_has_no_precision():
    y = np.array([0, 1, 0, 1])
    selection = Selection([subpop(0, [0, 1], n_test=4)], {0: "attacked"})
    poisons, keep = [poison_set(0, 2)], [np.ones(4 + 2, bool)]
    defended = Defended(keep=keep, score=[np.zeros(6)], rounds=[1], victims=None)
    table = subpop_table(selection, poisons, y, [y], y)
    row = with_defense(table, selection, poisons, keep, defended, y, {"defended": [y]}, y)
    assert row.loc[0, "poison_found"] == 0.0 and row.loc[0, "removed_fraction"] == 0.0
    assert np.isnan(row.loc[0, "poison_precision"])  # 0 of 0 removed rows: not 0, not 1


def test_defended_worst_k_are_the_undefended_worst_k_after_the_defense():
    """Before and after pair up per subpopulation: the defended means are over the
    subpopulations the attack damaged most without the defense."""
    table = pd.DataFrame(
        {
            "status": ["attacked"] * 4 + ["not selected"],
            "target_damage": [0.2, 0.9, 0.5, 0.1, np.nan],
            "collateral_damage": [0.0] * 4 + [np.nan],
            "aux_size": [10, 20, 30, 40, 50],
            "test_size": [5] * 5,
            "poison_count": [4] * 5,
            "defended_target_damage": [0.3, 0.1, 0.4, 0.0, np.nan],
            "defended_collateral_damage": [0.0] * 4 + [np.nan],
            "defended_accuracy": [0.8] * 4 + [np.nan],
            "poison_found": [1.0, 0.5, 0.25, 0.0, np.nan],
            "poison_precision": [1.0, np.nan, 0.5, 0.5, np.nan],  # S1's defense removed nothing
            "removed_fraction": [0.1] * 4 + [np.nan],
            "clean_removed_in_subpop": [0.0] * 4 + [np.nan],
            "clean_removed_outside": [0.0] * 4 + [np.nan],
            "defense_rounds": [2, 2, 2, 2, np.nan],
            "pruned_target_damage": [0.6, 0.7, 0.8, 0.9, np.nan],
        }
    )
    summary = summarize(table, clean_accuracy=0.85)
    assert summary["target_damage/worst1"] == 0.9 and summary["clean_accuracy"] == 0.85
    assert summary["defended_target_damage/worst1"] == 0.1  # S1's, not the lowest or the first
    assert summary["target_damage_reduction/worst1"] == pytest.approx(0.8)
    # 4 attacked: worst 5 is all of them, (-0.1 + 0.8 + 0.1 + 0.1) / 4
    assert summary["target_damage_reduction/worst5"] == pytest.approx(0.225)
    assert summary["target_damage_reduction/mean"] == pytest.approx(0.225)
    assert summary["poison_found/worst1"] == 0.5 and summary["pruned_target_damage/worst1"] == 0.7
    assert np.isnan(summary["poison_precision/worst1"])  # S1 removed nothing
    assert summary["poison_precision/mean"] == pytest.approx(2 / 3)  # over those with one
    assert summary["defended_target_damage/mean"] == pytest.approx(0.2)
    assert "defended_target_damage/worst10" in summary and "target_damage/worst10" in summary


def test_defense_details_are_one_row_per_victim_and_class():
    details = [{0: {"removed": 3, "silhouette": 0.4}, 1: {"removed": 0, "silhouette": 0.1}}, {}]
    rows = defense_details([poison_set(7, 2), poison_set(4, 2)], details)
    assert rows.to_dict("records") == [
        {"subpop_id": 7, "class": 0, "removed": 3, "silhouette": 0.4},
        {"subpop_id": 7, "class": 1, "removed": 0, "silhouette": 0.1},
    ]


def test_collateral_without_points_outside_the_subpopulation_is_counted_not_averaged():
    table = pd.DataFrame(
        {
            "status": ["attacked"] * 3,
            "target_damage": [0.5, 0.4, 0.3],
            "collateral_damage": [np.nan, 0.02, 0.04],  # the first holds every test point
            "aux_size": [10, 10, 10],
            "test_size": [10, 10, 10],
            "poison_count": [10, 10, 10],
        }
    )
    summary = summarize(table, clean_accuracy=0.9)
    assert summary["collateral_damage/worst5"] == pytest.approx(0.03)
    assert summary["collateral_damage/worst5_n"] == 2
    none = summarize(table.assign(collateral_damage=np.nan), clean_accuracy=0.9)
    assert np.isnan(none["collateral_damage/worst5"]) and none["collateral_damage/worst5_n"] == 0
