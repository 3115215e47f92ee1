"""Paired differences between the values of one setting within an experiment (e.g. k of
ClusterMatch against k=100), per α, as `subpop report` pairs α values: the difference per
seed, mean ± 95% interval over seeds.

    python -m benchmarks.paired_groups --tracking-dir DIR EXPERIMENT selector.k 100
    python -m benchmarks.paired_groups --tracking-dir DIR EXPERIMENT selector.representation input

A seed fixes the split and the clean victim at every value of the setting; the clusters differ
with k (or the layer they are built on), so this pairs less than α does, and says how far the
setting moves worst-k on the same data.
"""

from __future__ import annotations

import argparse

from subpop_runner.report import (
    ALPHA,
    SEED,
    canonical,
    latest_per_job,
    markdown,
    normalise,
    paired_table,
)
from subpop_runner.tracking import Tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment")
    parser.add_argument("setting", help="a config key, e.g. selector.k")
    parser.add_argument("baseline", help="the value the others are compared with")
    parser.add_argument("--tracking-dir", default="mlruns")
    args = parser.parse_args()
    runs = Tracker(dir=args.tracking_dir).job_runs(args.experiment)
    runs = normalise(latest_per_job(runs)[0])
    column, baseline = f"params.{args.setting}", canonical(args.baseline)
    others = sorted((v for v in runs[column].unique() if v != baseline), key=order)
    metrics = {f"worst-{k}": f"metrics.target_damage/worst{k}" for k in (1, 5, 10)}
    for alpha, at in runs.groupby(runs[ALPHA].astype(float)):
        contrasts = [(f"{args.setting}={v} − {baseline}", baseline, v) for v in others]
        print(f"\nα={alpha:g}\n")
        print(markdown(paired_table(at, at[column], contrasts, metrics, [SEED])))


def order(value: str) -> tuple[int, float, str]:
    """Numbers by value (k), names (layers) alphabetically after them."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


if __name__ == "__main__":
    main()
