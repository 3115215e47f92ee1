"""What an optimisation attack costs: seconds per attacked subpopulation for GO and INF (the
paper: 40 s per GO attack and 5.4 h per INF attack on a GPU, VGG-LL on UTKFace), from the runs
of `make results-attacks` (sweeps/*_attacks.yaml).

Every GO or INF run logs ``attack_seconds``: moving the poisons of all its attacked
subpopulations (10 per run here), after label flipping and after the attacker's model is
trained. Per run, attack_seconds / attacked subpopulations is one attack's time; the table
gives its mean ± 95% interval over runs, per dataset, attack and α, with the mean number of
steps INF took before its targets' loss stopped rising. Writes docs/performance_attacks.md.

    python -m benchmarks.attacks [--tracking-dir /path/to/mlruns]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from benchmarks.page import write_page
from subpop_runner.intervals import interval
from subpop_runner.report import latest_per_job, markdown, options
from subpop_runner.tracking import Tracker

# The sweeps over attacks: each logs its attacks to one experiment named after its file.
SETTINGS = {
    "adult_attacks": "UCI Adult, MLP",
    "fashion_mnist_efficientnet_ll_attacks": "Fashion-MNIST, EfficientNet-Lite0 LL",
    "fashion_mnist_efficientnet_ll_attacks_epsilon": "Fashion-MNIST, EfficientNet-Lite0 LL",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracking-dir", default="mlruns")
    parser.add_argument("--out", default="docs/performance_attacks.md")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    tracker = Tracker(uri=None, dir=args.tracking_dir)
    known = set(tracker.experiments_with_jobs())
    rows = []
    for experiment, setting in SETTINGS.items():
        if experiment not in known:
            continue
        everything, _ = latest_per_job(tracker.job_runs(experiment))
        for attack in options("attack"):  # those with runs in this experiment
            runs = everything[everything["tags.choice.attack"] == attack]
            if runs.empty:
                continue
            runs = runs.assign(
                per_attack=runs["metrics.attack_seconds"] / runs["metrics.subpops/attacked"],
                alpha=runs["params.attack.alpha"].astype(float),
                epsilon=runs["params.attack.epsilon"].astype(float),
                poisons=runs["metrics.poison_count/worst10"],
            )
            for (epsilon, alpha), group in runs.groupby(["epsilon", "alpha"]):
                mean, half, n = interval(group["per_attack"])
                rows.append(
                    {
                        "data, model": setting,
                        "attack": attack,
                        "ε (images)": f"{epsilon:.3g}" if "mnist" in experiment else "–",
                        "α": f"{alpha:g}",
                        "seconds per attack": f"{mean:.1f} ± {half:.1f} (n={n})",
                        "poisons per attack": f"{group['poisons'].mean():.0f}",
                    }
                )
    write_page(
        "Attack cost: gradient optimisation and influence",
        "benchmarks/attacks.py",
        started,
        "the runs of sweeps/adult_attacks.yaml and sweeps/fashion_mnist_efficientnet_ll_attacks"
        "{,_epsilon}.yaml (real UCI Adult; Fashion-MNIST 5,000 images per part, 64 px into the "
        "backbone; 10 subpopulations per run)",
        {
            "Seconds per attacked subpopulation": [
                "One attack = moving one subpopulation's label-flip poisons (GO: 50 Adam steps "
                "on the attacker's model; INF: up to 20 signed steps, each with an L-BFGS refit "
                "of the head on D_aux ∪ poisons and s_test by conjugate gradients). Per run, "
                "attack_seconds / attacked subpopulations; mean ± 95% interval over runs (3 "
                "seeds). Poisons per attack: the mean poison count of the run's attacked "
                "subpopulations. The sweeps ran on one pinned core of 2 while other work used "
                "the other; no GPU.",
                "",
                markdown(pd.DataFrame(rows)),
            ]
        },
        args.out,
    )


if __name__ == "__main__":
    main()
