import numpy as np
import pandas as pd
import pytest

from subpop_runner.metrics import damage, summarize


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
