"""Step 6: target and collateral damage (paper Def. 3.2, Eqs. 1-2) on the test set.

For a subpopulation S and a victim trained on D ∪ D_p:

- target damage     = acc_clean(test ∩ S) − acc_poisoned(test ∩ S)
- collateral damage = acc_clean(test \\ S) − acc_poisoned(test \\ S)

Worst-k is the mean target damage of the k attacked subpopulations with the largest target
damage; the collateral reported beside it is the mean collateral of the worst 5 (Table 4),
over those of them with test points outside S (``collateral_damage/worst5_n`` counts them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from subpop_runner.attacks.base import PoisonSet
from subpop_runner.selectors.base import Selection

WORST_K = (1, 5, 10)


def accuracy(pred: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
    return float((pred[mask] == y[mask]).mean()) if mask.any() else float("nan")


def damage(
    clean_pred: np.ndarray, poisoned_pred: np.ndarray, y: np.ndarray, in_subpop: np.ndarray
) -> dict[str, float]:
    """Accuracies of both victims on test ∩ S and test \\ S, and the two damages."""
    out = {
        "clean_acc_target": accuracy(clean_pred, y, in_subpop),
        "poisoned_acc_target": accuracy(poisoned_pred, y, in_subpop),
        "clean_acc_collateral": accuracy(clean_pred, y, ~in_subpop),
        "poisoned_acc_collateral": accuracy(poisoned_pred, y, ~in_subpop),
    }
    out["target_damage"] = out["clean_acc_target"] - out["poisoned_acc_target"]
    out["collateral_damage"] = out["clean_acc_collateral"] - out["poisoned_acc_collateral"]
    return out


def subpop_table(
    selection: Selection,
    poison_sets: Sequence[PoisonSet],
    clean_pred: np.ndarray,
    poisoned_pred: np.ndarray,
    y_test: np.ndarray,
) -> pd.DataFrame:
    """One row per candidate subpopulation; damage columns empty where it was not attacked."""
    attacked = {p.subpop_id: (p, poisoned_pred[i]) for i, p in enumerate(poison_sets)}
    rows = []
    for s in selection.candidates:
        row = {
            "id": s.id,
            "description": s.description,
            "status": selection.status[s.id],
            **{f"{k}_size": v for k, v in s.sizes.items()},
            "clean_confidence": s.clean_confidence,
        }
        if s.id in attacked:
            poison, pred = attacked[s.id]
            row |= {
                "poison_count": len(poison),
                "flip_label": int(poison.y[0]) if len(poison) else None,
                **damage(clean_pred, pred, y_test, s.test),
            }
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame, clean_accuracy: float) -> dict[str, float]:
    """The experiment's headline numbers (metric keys as logged to MLflow)."""
    attacked = table[table["status"] == "attacked"].sort_values(
        "target_damage", ascending=False, kind="stable"
    )
    summary = {
        "clean_accuracy": clean_accuracy,
        "subpops/candidates": float(len(table)),
        "subpops/attacked": float(len(attacked)),
        "subpops/no_test_points": float((table["status"] == "no test points").sum()),
    }
    for k in WORST_K:
        worst = attacked.head(k)
        summary[f"target_damage/worst{k}"] = _mean(worst.get("target_damage"))
        summary[f"subpop_size_aux/worst{k}"] = _mean(worst.get("aux_size"))
        summary[f"subpop_size_test/worst{k}"] = _mean(worst.get("test_size"))
        summary[f"poison_count/worst{k}"] = _mean(worst.get("poison_count"))
    # A subpopulation that holds every test point has no collateral: the mean is over those
    # that have some, and the count says how many did (0: NaN, and why).
    collateral = attacked.head(5).get("collateral_damage")
    summary["collateral_damage/worst5"] = _mean(
        None if collateral is None else collateral.dropna()
    )
    summary["collateral_damage/worst5_n"] = float(
        0 if collateral is None else collateral.notna().sum()
    )
    summary["target_damage/mean"] = _mean(attacked.get("target_damage"))
    return summary


def _mean(column: pd.Series | None) -> float:
    return float("nan") if column is None or column.empty else float(column.mean())
