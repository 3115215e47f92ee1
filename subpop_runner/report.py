"""`subpop report`: MLflow runs back into the paper's table shape, plus a plot.

For each experiment: finished job runs are grouped by every config value that differs between
them (except alpha, which becomes the columns, and seed, which is averaged over), and each
group is printed as the paper prints it: rows worst-1/5/10 target damage, columns alpha, with
clean accuracy, mean subpopulation size and the collateral of the worst 5 beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from subpop_runner.errors import ConfigError
from subpop_runner.metrics import WORST_K
from subpop_runner.tracking import Tracker

ALPHA = "params.attack.alpha"
# Settings that do not change results: never a reason to report runs apart.
NOT_A_GROUP = (
    "params.attack.alpha",
    "params.seed",
    "params.tracking.",
    "params.cache.",
    "params.training.memory_mb",
)


def group_columns(runs: pd.DataFrame) -> list[str]:
    """Config values that differ between runs and should not be averaged together."""
    params = [c for c in runs.columns if c.startswith("params.") and not c.startswith(NOT_A_GROUP)]
    return [c for c in params if runs[c].nunique(dropna=False) > 1]


def paper_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows worst-1/5/10; columns: target damage per alpha, then mean aux size."""
    runs = runs.assign(alpha=runs[ALPHA].astype(float))
    rows = []
    for k in WORST_K:
        by_alpha = runs.groupby("alpha")[f"metrics.target_damage/worst{k}"]
        row = {"worst": k}
        row |= {f"α={a:g}": _cell(by_alpha.get_group(a)) for a in sorted(by_alpha.groups)}
        row["mean aux size"] = round(runs[f"metrics.subpop_size_aux/worst{k}"].mean(), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def side_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per alpha: clean accuracy, collateral of the worst 5, subpopulations, runs, wall time."""
    runs = runs.assign(
        alpha=runs[ALPHA].astype(float),
        wall=(runs["end_time"] - runs["start_time"]).dt.total_seconds(),
    )
    grouped = runs.groupby("alpha")
    return pd.DataFrame(
        {
            "α": [f"{a:g}" for a in grouped.groups],
            "clean accuracy": [_cell(g["metrics.clean_accuracy"]) for _, g in grouped],
            "collateral (worst 5)": [
                _cell(g["metrics.collateral_damage/worst5"]) for _, g in grouped
            ],
            "attacked": [f"{g['metrics.subpops/attacked'].mean():.0f}" for _, g in grouped],
            "no test points": [
                f"{g['metrics.subpops/no_test_points'].mean():.0f}" for _, g in grouped
            ],
            "runs": [len(g) for _, g in grouped],
            "wall time / run (s)": [f"{g['wall'].mean():.0f}" for _, g in grouped],
        }
    )


def reference_table(paper: dict[str, Any]) -> pd.DataFrame:
    alphas = sorted({float(a) for row in paper["target_damage"].values() for a in row})
    rows = []
    for k in WORST_K:
        values = {float(a): v for a, v in paper["target_damage"][f"worst{k}"].items()}
        row = {"worst": k} | {f"α={a:g}": f"{values[a]:.3f}" for a in alphas}
        if "size" in paper:
            row["size"] = paper["size"][f"worst{k}"]
        rows.append(row)
    return pd.DataFrame(rows)


def _numeric_first(key: tuple) -> tuple:
    """Sort group keys numerically where they are numbers ("50" before "100")."""

    def number(value: object) -> tuple:
        try:
            return (0, float(value), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(value))

    return tuple(number(v) for v in key)


def markdown(table: pd.DataFrame) -> str:
    """Markdown table that prints cells as formatted here (tabulate would re-parse numbers)."""
    return table.to_markdown(index=False, disable_numparse=True)


def _cell(values: pd.Series) -> str:
    values = values.astype(float).dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std():.3f}"


def plot(sections: list[tuple[str, pd.DataFrame]], paper: dict[str, Any] | None, path: Path):
    """Target damage vs alpha, one line per worst-k, one panel per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(sections), figsize=(4.5 * len(sections), 3.6), squeeze=False, sharey=True
    )
    for ax, (title, runs) in zip(axes[0], sections, strict=True):
        alpha = runs[ALPHA].astype(float)
        for k, color in zip(WORST_K, ("C0", "C1", "C2"), strict=True):
            mean = runs.groupby(alpha)[f"metrics.target_damage/worst{k}"].mean()
            ax.plot(mean.index, mean.values, "o-", color=color, label=f"worst-{k}")
            if paper is not None:
                ref = {float(a): v for a, v in paper["target_damage"][f"worst{k}"].items()}
                ax.plot(
                    list(ref),
                    list(ref.values()),
                    "x--",
                    color=color,
                    alpha=0.6,
                    label=f"worst-{k} (paper)",
                )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("poison rate α (relative to subpopulation aux size)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(alpha)), [f"{a:g}" for a in sorted(set(alpha))])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("target damage")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def experiment_report(
    tracker: Tracker, experiment: str, paper: dict[str, Any] | None, plot_path: Path
) -> str:
    runs = tracker.job_runs(experiment)
    if runs.empty:
        raise ConfigError(f"experiment {experiment!r} has no finished job runs at {tracker.uri}")
    groups = group_columns(runs)
    sections = [("", runs)]
    if groups:
        keyed = sorted(runs.groupby(groups, dropna=False), key=lambda kv: _numeric_first(kv[0]))
        sections = [
            (
                ", ".join(
                    f"{c.removeprefix('params.')}={v}" for c, v in zip(groups, key, strict=True)
                ),
                part,
            )
            for key, part in keyed
        ]
    lines = [f"## {experiment}", ""]
    for title, part in sections:
        if title:
            lines += [f"### {title}", ""]
        lines += [
            "Target damage (ours):",
            "",
            markdown(paper_table(part)),
            "",
            markdown(side_table(part)),
            "",
        ]
    if paper is not None:
        lines += [
            f"Paper, {paper['table']} (clean accuracy {paper['clean_accuracy']}):",
            "",
            markdown(reference_table(paper)),
            "",
        ]
    plot(sections, paper, plot_path)
    lines += [f"![target damage vs α]({plot_path.name})", ""]
    return "\n".join(lines)


def machine() -> str:
    import torch

    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="subpop report", description="Paper-style tables and plots from MLflow runs."
    )
    parser.add_argument(
        "--experiment",
        "-e",
        action="append",
        help="MLflow experiment name (repeatable; default adult_cluster_match)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: SQLite under --tracking-dir)",
    )
    parser.add_argument("--tracking-dir", default="mlruns")
    parser.add_argument("--out", default="reports/report.md", help="markdown file to write")
    parser.add_argument(
        "--notes", default=None, help="hand-written markdown appended as the discussion"
    )
    parser.add_argument(
        "--paper",
        default="sweeps/paper.yaml",
        help="the paper's numbers per experiment (YAML); '' for none",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    tracker = Tracker(uri=args.tracking_uri, dir=args.tracking_dir)
    tracker.check()
    papers = {}
    if args.paper and Path(args.paper).is_file():
        papers = OmegaConf.to_container(OmegaConf.load(args.paper))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    experiments = args.experiment or ["adult_cluster_match"]
    plots = {e: out.with_name(f"{out.stem}_{e}.png") for e in experiments}
    parts = [f"# Subpopulation attack results\n\nMachine: {machine()}.\n"]
    parts += [experiment_report(tracker, e, papers.get(e), plots[e]) for e in experiments]
    if args.notes:
        parts.append(Path(args.notes).read_text())
    text = "\n".join(parts)
    out.write_text(text)
    for experiment, plot_path in plots.items():
        tracker.report_run(experiment, [out, plot_path])
    print(text)
    print(f"written: {out} and {', '.join(str(p) for p in plots.values())}")
