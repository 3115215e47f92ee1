"""The report's figure: target damage vs alpha with 95% confidence intervals, one panel per
group of runs, the paper's numbers only in panels with the paper's setting, drawn over our 95%
prediction interval for one run (shaded): the paper's numbers are single runs, and the
interval of our mean is the wrong yardstick for one run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from subpop_runner.metrics import WORST_K

COLORS = ("C0", "C1", "C2")


def plot(panels: list[tuple[str, pd.DataFrame, dict[str, Any] | None]], path: Path) -> None:
    """The `figure` of ``panels``, saved to ``path``."""
    import matplotlib.pyplot as plt

    fig = figure(panels)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure(panels: list[tuple[str, pd.DataFrame, dict[str, Any] | None]]) -> Any:
    """Each panel: its title, its curves (columns alpha, worst, mean, half: the 95% CI
    half-width, NaN for one run; low, high: the 95% prediction interval for one run) and the
    paper's numbers to draw beside them, or None."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(4.5 * len(panels), 4.2),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    for ax, (title, curves, paper) in zip(axes[0], panels, strict=True):
        for k, color in zip(WORST_K, COLORS, strict=True):
            curve = curves[curves["worst"] == k].sort_values("alpha")
            ax.errorbar(
                curve["alpha"],
                curve["mean"],
                yerr=[0.0 if math.isnan(h) else h for h in curve["half"]],  # one run: no bar
                fmt="o-",
                capsize=3,
                color=color,
                label=f"worst-{k}, mean ± 95% CI",
            )
            if paper is not None:
                # Damage is a difference of accuracies: a band beyond ±1 says nothing more and
                # would squeeze the curves (two seeds give intervals of several units).
                band = curve[["low", "high"]].clip(-1, 1)
                ax.fill_between(curve["alpha"], band["low"], band["high"], color=color, alpha=0.1)
                ref = {float(a): v for a, v in paper["target_damage"][f"worst{k}"].items()}
                ax.plot(
                    *zip(*sorted(ref.items()), strict=True),
                    "x--",
                    color=color,
                    alpha=0.6,
                    label=f"worst-{k}, paper",
                )
        paper_alphas = {float(a) for a in paper["target_damage"]["worst1"]} if paper else set()
        alphas = sorted(set(curves["alpha"]) | paper_alphas)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("poison rate α (relative to subpopulation aux size)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("target damage")
    # One legend for the figure: paper lines appear in some panels only.
    labelled = {
        label: handle
        for ax in axes[0]
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)
    }
    if any(paper is not None for _, _, paper in panels):
        labelled["shaded: 95% prediction interval for one run"] = Patch(color="0.5", alpha=0.25)
    # Three legend columns need two panels' width; one panel fits two.
    ncols = 3 if len(panels) > 1 else 2
    fig.legend(
        labelled.values(), labelled.keys(), loc="outside lower center", ncols=ncols, fontsize=7
    )
    return fig
