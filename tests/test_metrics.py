import numpy as np
import pandas as pd
import pytest

from subpop_runner.attacks.base import PoisonSet
from subpop_runner.metrics import damage, subpop_table, summarize
from subpop_runner.selectors.base import Selection, Subpopulation


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


def subpop(id: int, test: list[int], n_test: int = 6) -> Subpopulation:
    mask = np.zeros(n_test, bool)
    mask[test] = True
    aux = np.ones(4, bool)
    return Subpopulation(id=id, description=f"s{id}", aux=aux, train=aux, test=mask)


def test_subpop_table_measures_each_subpop_against_its_own_victim():
    y = np.array([0, 1, 0, 1, 0, 1])
    candidates = [subpop(0, [0, 1]), subpop(1, [4, 5]), subpop(2, [2, 3]), subpop(3, [])]
    status = {0: "attacked", 1: "not selected", 2: "attacked", 3: "no test points"}
    poison = [  # victims in another order than the candidates
        PoisonSet(2, np.zeros((3, 1)), np.ones(3, np.int64), np.zeros(3, np.int64)),
        PoisonSet(0, np.zeros((5, 1)), np.zeros(5, np.int64), np.zeros(5, np.int64)),
    ]
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
