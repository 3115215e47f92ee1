"""Step 6: target and collateral damage (paper Def. 3.2, Eqs. 1-2) on the test set.

For a subpopulation S and a victim trained on D ∪ D_p:

- target damage     = acc_clean(test ∩ S) − acc_poisoned(test ∩ S)
- collateral damage = acc_clean(test \\ S) − acc_poisoned(test \\ S)

Worst-k is the mean target damage of the k attacked subpopulations with the largest target
damage; the collateral reported beside it is the mean collateral of the worst 5 (Table 4),
over those of them with test points outside S (``collateral_damage/worst5_n`` counts them).

With a defense, ``target_damage`` stays the undefended victim's (before) and
``defended_target_damage`` is the defended victim's (after), both against the same clean
victim, so a defense's own cost to S counts as damage (paper Sec. 7.1, Figure 2). The worst-k
of a defended run are the subpopulations the attack damaged most without the defense, so the
``defended_*/worst{k}`` means are the same subpopulations after: before and after pair up per
subpopulation and seed. What the defense removed is compared with the provenance here, after
the defense has run: ``poison_found`` (recall), ``poison_precision``, ``removed_fraction``
(of the victim's training rows), and the fractions of the clean rows inside and outside S
that it removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from subpop_runner.types import PoisonSet, Selection

if TYPE_CHECKING:
    from subpop_runner.defenses.base import Defended

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


DEFENSE_COLUMNS = (
    "defended_target_damage",
    "defended_collateral_damage",
    "defended_accuracy",
    "poison_found",
    "poison_precision",
    "removed_fraction",
    "clean_removed_in_subpop",
    "clean_removed_outside",
    "defense_rounds",
)


def with_defense(
    table: pd.DataFrame,
    selection: Selection,
    poison_sets: Sequence[PoisonSet],
    keep: Sequence[np.ndarray],
    defended: Defended,
    clean_pred: np.ndarray,
    predictions: dict[str, np.ndarray],
    y_test: np.ndarray,
) -> pd.DataFrame:
    """``table`` with the `DEFENSE_COLUMNS` of each attacked subpopulation; ``keep[v]`` is
    victim v's mask over its train rows then its poison rows; ``predictions``: the defended
    victims' test predictions (``defended``) and any intermediate stage's (``pruned``: columns
    ``pruned_target_damage``, ``pruned_collateral_damage``), by `Defended.measured`: none
    without a defense, and then ``table`` as it was."""
    if not predictions:  # no defense: nothing measured beside the undefended victims
        return table
    defended_pred = predictions["defended"]
    by_id = {s.id: s for s in selection.candidates}
    rows = []
    for v, (poison, kept) in enumerate(zip(poison_sets, keep, strict=True)):
        subpop = by_id[poison.subpop_id]
        n_train = len(kept) - len(poison)
        train_kept, poison_kept = kept[:n_train], kept[n_train:]
        removed, poison_removed = int((~kept).sum()), int((~poison_kept).sum())
        row = {"id": subpop.id}
        for name, predicted in predictions.items():
            after = damage(clean_pred, predicted[v], y_test, subpop.test)
            row[f"{name}_target_damage"] = after["target_damage"]
            row[f"{name}_collateral_damage"] = after["collateral_damage"]
        rows.append(
            row
            | {
                "defended_accuracy": float((defended_pred[v] == y_test).mean()),
                "poison_found": _share(poison_removed, len(poison)),
                "poison_precision": _share(poison_removed, removed),
                "removed_fraction": _share(removed, len(kept)),
                "clean_removed_in_subpop": _share(
                    int((~train_kept & subpop.train).sum()), int(subpop.train.sum())
                ),
                "clean_removed_outside": _share(
                    int((~train_kept & ~subpop.train).sum()), int((~subpop.train).sum())
                ),
                "defense_rounds": defended.rounds[v],
            }
        )
    return table.merge(pd.DataFrame(rows), on="id", how="left")


def defense_details(poison_sets: Sequence[PoisonSet], details: Sequence[dict]) -> pd.DataFrame:
    """A defense's per-victim report (activation clustering: per class), one row per entry."""
    rows = [
        {"subpop_id": poison.subpop_id, "class": key, **value}
        for poison, report in zip(poison_sets, details, strict=True)
        for key, value in report.items()
    ]
    return pd.DataFrame(rows)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else float("nan")


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
    if "defended_target_damage" in attacked:
        summary |= defense_summary(attacked)
    return summary


def defense_summary(attacked: pd.DataFrame) -> dict[str, float]:
    """Means of the defense columns over the undefended worst-k and over every attacked
    subpopulation, and the worst-k damage reduction (before − after, same subpopulations)."""
    summary = {}
    reduction = attacked["target_damage"] - attacked["defended_target_damage"]
    stages = [c for c in attacked.columns if c.endswith("_damage") and c not in DEFENSE_COLUMNS]
    stages = [c for c in stages if c not in ("target_damage", "collateral_damage")]
    for scope, rows in [*((f"worst{k}", attacked.head(k)) for k in WORST_K), ("mean", attacked)]:
        for column in [*DEFENSE_COLUMNS, *stages]:
            summary[f"{column}/{scope}"] = _mean(rows[column].dropna())
        summary[f"target_damage_reduction/{scope}"] = _mean(reduction.loc[rows.index])
    return summary


def _mean(column: pd.Series | None) -> float:
    return float("nan") if column is None or column.empty else float(column.mean())
