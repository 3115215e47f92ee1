"""Two experiments' runs subpopulation by subpopulation (the same seeds, the same subpopulations
and poison sets, as `model=mlp` and `model=sklearn_mlp` are): per seed, the spread of target
damage across subpopulations, the share below 0 (a victim doing better on S than the clean
one: noise, not poison), the correlation between the two and the spread of their difference.

    python -m benchmarks.subpop_spread --tracking-dir DIR BASELINE OTHER

Worst-k is a maximum over many subpopulations, so victim noise that leaves the mean damage
alone still raises it; this is how docs/results/adult_notes.md tells the two apart.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import pandas as pd

from subpop_runner.tracking import Tracker


def damage_by_seed(tracker: Tracker, experiment: str, folder: str) -> dict[int, pd.Series]:
    """Each finished run's per-subpopulation target damage, by seed."""
    runs = tracker.job_runs(experiment)
    found = {}
    for run_id, seed in zip(runs["run_id"], runs["params.seed"], strict=True):
        path = tracker.client.download_artifacts(run_id, "subpops.csv", f"{folder}/{run_id}")
        found[int(seed)] = pd.read_csv(path).set_index("id")["target_damage"].dropna()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline")
    parser.add_argument("other")
    parser.add_argument("--tracking-dir", default="mlruns")
    args = parser.parse_args()
    tracker = Tracker(dir=args.tracking_dir)
    with tempfile.TemporaryDirectory() as folder:
        base = damage_by_seed(tracker, args.baseline, folder)
        other = damage_by_seed(tracker, args.other, folder)
    rows = []
    for seed in sorted(base.keys() & other.keys()):
        a, b = base[seed].align(other[seed], join="inner")
        rows.append(
            {
                "seed": seed,
                "subpopulations": len(a),
                "sd (baseline)": a.std(),
                "sd (other)": b.std(),
                "below 0 (baseline)": (a < 0).mean(),
                "below 0 (other)": (b < 0).mean(),
                "correlation": np.corrcoef(a, b)[0, 1],
                "sd of other − baseline": (b - a).std(),
            }
        )
    table = pd.DataFrame(rows)
    means = table.drop(columns="seed").mean().to_frame().T.assign(seed="mean")
    print(pd.concat([table, means]).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
