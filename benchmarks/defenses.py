"""What a defense costs on the whole Adult Table 5 grid (300 victims: k=100 clusters at
α ∈ {0.5, 1, 2}), from the runs of `make results-defenses` (sweeps/adult_defenses.yaml).

Every defended run logs the poisoned victims' training time (``train_seconds``: the undefended
grid's share of that job) and the defense's own wall time (``defense_seconds``: scoring and
every retraining round, all victims batched). Per seed, the defended grid's time is
Σ(train + defense) over the three α and the undefended grid's Σ train; their ratio is the
figure, mean ± 95% interval over seeds. Writes docs/performance_defenses.md.

    python -m benchmarks.defenses [--tracking-dir /path/to/mlruns]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from benchmarks.page import write_page
from subpop_runner.intervals import interval
from subpop_runner.report import latest_per_job, markdown
from subpop_runner.tracking import Tracker

DEFENSES = ("trim", "sever", "activation_clustering", "spectral_signatures")
TARGET = {"trim": 6.0, "sever": 2.0, "activation_clustering": 2.0, "spectral_signatures": 2.0}


def grid_ratios(runs: pd.DataFrame) -> pd.DataFrame:
    """Per seed: undefended grid seconds, defense seconds and the ratio (3 α per seed)."""
    per_seed = runs.groupby("params.seed").agg(
        jobs=("metrics.train_seconds", "size"),
        train=("metrics.train_seconds", "sum"),
        defense=("metrics.defense_seconds", "sum"),
        rounds=("metrics.defense_rounds/mean", "mean"),
    )
    per_seed = per_seed[per_seed["jobs"] == 3]  # whole grids only
    return per_seed.assign(ratio=(per_seed["train"] + per_seed["defense"]) / per_seed["train"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracking-dir", default="mlruns")
    parser.add_argument("--out", default="docs/performance_defenses.md")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    tracker = Tracker(uri=None, dir=args.tracking_dir)
    rows = []
    for defense in DEFENSES:
        runs, _ = latest_per_job(tracker.job_runs(f"adult_cluster_match_{defense}"))
        grids = grid_ratios(runs)
        mean, half, n = interval(grids["ratio"])
        rows.append(
            {
                "defense": defense,
                "undefended grid (s)": f"{grids['train'].mean():.0f}",
                "defense (s)": f"{grids['defense'].mean():.0f}",
                "rounds (mean per victim)": f"{grids['rounds'].mean():.1f}",
                "defended / undefended": f"{mean:.2f} ± {half:.2f} (n={n})",
                "issue's bound": f"≤ {TARGET[defense]:g}×",
            }
        )
    write_page(
        "Defense cost on the Adult Table 5 grid",
        "benchmarks/defenses.py",
        started,
        "real UCI Adult, the runs of sweeps/adult_defenses.yaml (ClusterMatch k=100, "
        "α ∈ {0.5, 1, 2}: 300 victims per seed)",
        {
            "Defended grid time against the undefended grid": [
                "Per seed, Σ over the three α of the poisoned victims' training time (the "
                "undefended grid) and of the defense's wall time (its scoring and every "
                "retraining round, all victims of a job in one batched fit per round); the ratio "
                "is (undefended + defense) / undefended, mean ± 95% interval over seeds. The "
                "sweep ran its jobs on one pinned core of 2 while other work used the other.",
                "",
                markdown(pd.DataFrame(rows)),
            ]
        },
        args.out,
    )


if __name__ == "__main__":
    main()
