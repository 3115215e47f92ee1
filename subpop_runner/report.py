"""`subpop report`: MLflow runs back into the paper's table shape, plus a plot.

For each experiment: finished job runs are grouped by every config value that differs between
them (except alpha, which becomes the columns, and seed, which is averaged over), and each
group is printed as the paper prints it: rows worst-1/5/10 target damage, columns alpha, with
clean accuracy, mean subpopulation size and the collateral of the worst 5 beside it. Each cell
is the mean over seeds with the half-width of its 95% Student-t confidence interval.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from subpop_runner.errors import ConfigError
from subpop_runner.intervals import interval, paired_differences, prediction_interval
from subpop_runner.metrics import WORST_K
from subpop_runner.report_plot import plot
from subpop_runner.tracking import Tracker

ALPHA = "params.attack.alpha"
# Settings that do not change results: never a reason to report runs apart.
SEED = "params.seed"
NOT_A_GROUP = (
    "params.attack.alpha",
    "params.seed",
    "params.tracking.",
    "params.cache.",
    "params.training.memory_mb",
)
JOB_TIME = "metrics.job_seconds"
JOB_KEY = "tags.subpop.job_key"
ATTACKED = "metrics.subpops/attacked"
FEWER = "k>n"
INTERVALS = (
    "Each cell: mean over seeds ± half-width of the 95% confidence interval of that mean "
    "(Student t: t₀.₉₇₅,ₙ₋₁ · sd / √n, sd with n − 1), and n, the runs it averages; a single run "
    f"shows its value and n=1. A cell marked {FEWER} averages fewer attacked subpopulations than "
    "k (worst-10 over 3 is the mean of those 3, the same as worst-3). The paper's numbers are "
    "single runs: each is judged against our 95% prediction interval for one run, mean ± "
    "t · sd · √(1 + 1/n) with the same t, not against the interval of our mean. A difference "
    "between α values is the difference per seed (the same split, clusters and poison draws) "
    "with its 95% interval over seeds; * marks one whose interval excludes 0. Job time: the "
    "whole job; "
    "run time: the MLflow run's start to end, which begins after the data is loaded."
)


@dataclass
class Section:
    """One group of runs: its heading and whether it is the setting the paper reports."""

    title: str
    runs: pd.DataFrame
    is_paper_setting: bool


def canonical(value: object) -> object:
    """One spelling per value, so "1", "1.0" and 1 are one group; missing stays NaN."""
    if isinstance(value, bool):
        return str(value)
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return np.nan
    try:
        return f"{float(value):.15g}"  # 15 digits: exact for what was typed, no float noise
    except (TypeError, ValueError):
        return str(value)


def normalise(runs: pd.DataFrame) -> pd.DataFrame:
    params = [c for c in runs.columns if c.startswith("params.")]
    return runs.assign(**{c: runs[c].map(canonical) for c in params})


def group_columns(runs: pd.DataFrame) -> list[str]:
    """Config values that differ between runs and should not be averaged together. A value
    set by the seed (``selector.random_state: ${seed}``) is averaged over like the seed."""
    params = [c for c in runs.columns if c.startswith("params.") and not c.startswith(NOT_A_GROUP)]
    varying = [c for c in params if runs[c].nunique(dropna=False) > 1]
    if SEED not in runs:
        return varying
    by_seed = runs.groupby(SEED, dropna=False)
    return [c for c in varying if by_seed[c].nunique(dropna=False).max() > 1]


def matches(runs: pd.DataFrame, setting: Mapping[str, Any]) -> bool:
    """Whether every run has the paper's setting (params normalised: 100 == "100.0")."""
    return all(
        f"params.{key}" in runs and (runs[f"params.{key}"] == canonical(value)).all()
        for key, value in setting.items()
    )


def sections(runs: pd.DataFrame, setting: Mapping[str, Any] | None) -> list[Section]:
    """Runs split by `group_columns`, headed by the keys that have a value in each group."""
    groups = group_columns(runs)
    if not groups:
        return [Section("", runs, setting is not None and matches(runs, setting))]
    keyed = sorted(runs.groupby(groups, dropna=False), key=lambda kv: _numeric_first(kv[0]))
    return [
        Section(
            ", ".join(
                f"{c.removeprefix('params.')}={v}"
                for c, v in zip(groups, key, strict=True)
                if not pd.isna(v)
            ),
            part,
            setting is not None and matches(part, setting),
        )
        for key, part in keyed
    ]


def curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Target damage per alpha and worst-k: mean, 95% CI half-width and n (for the plot)."""
    rows = [
        (a, k, *interval(g[f"metrics.target_damage/worst{k}"]))
        for a, g in runs.groupby(runs[ALPHA].astype(float))
        for k in WORST_K
    ]
    return pd.DataFrame(rows, columns=["alpha", "worst", "mean", "half", "n"])


def cell(values: pd.Series) -> str:
    mean, half, n = interval(values)
    if n == 0:
        return "–"
    if n == 1:
        return f"{mean:.3f} (n=1)"
    return f"{mean:.3f} ± {half:.3f} (n={n})"


def worst_cell(runs: pd.DataFrame, k: int) -> str:
    """Worst-k target damage; marked when a run attacked fewer than k subpopulations."""
    text = cell(runs[f"metrics.target_damage/worst{k}"])
    if ATTACKED in runs and (runs[ATTACKED] < k).any():
        text += f" {FEWER}"
    return text


def paper_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows worst-1/5/10; columns: target damage per alpha, then mean aux size."""
    by_alpha = runs.groupby(runs[ALPHA].astype(float))
    rows = []
    for k in WORST_K:
        row = {"worst": k}
        row |= {f"α={a:g}": worst_cell(g, k) for a, g in by_alpha}
        row["mean aux size"] = f"{runs[f'metrics.subpop_size_aux/worst{k}'].mean():.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def alpha_differences(runs: pd.DataFrame) -> pd.DataFrame | None:
    """Worst-k target damage, paired per seed between consecutive α values (and the largest
    against the smallest where there are three or more); None with a single α."""
    alpha = runs[ALPHA].astype(float)
    values = sorted(alpha.unique())
    pairs = list(zip(values, values[1:], strict=False))
    if len(values) > 2:
        pairs.append((values[0], values[-1]))
    if not pairs:
        return None
    rows = []
    for k in WORST_K:
        row = {"worst": k}
        for low, high in pairs:
            diffs = paired_differences(
                runs, alpha, low, high, f"metrics.target_damage/worst{k}", [SEED]
            )
            mean, half, n = interval(diffs)
            mark = " *" if n > 1 and abs(mean) > half else ""
            row[f"α={high:g} − α={low:g}"] = cell(diffs) + mark
        rows.append(row)
    return pd.DataFrame(rows)


def paper_check(paper: dict[str, Any], runs: pd.DataFrame) -> pd.DataFrame:
    """Each paper number against our 95% prediction interval for one run at its α."""
    by_alpha = {a: g for a, g in runs.groupby(runs[ALPHA].astype(float))}
    rows = []
    for k in WORST_K:
        row = {"worst": k}
        for alpha, number in paper["target_damage"].get(f"worst{k}", {}).items():
            runs_at = by_alpha.get(float(alpha))
            if runs_at is None:
                continue
            low, high, n = prediction_interval(runs_at[f"metrics.target_damage/worst{k}"])
            if n < 2:
                verdict = "no interval (n<2)"
            else:
                inside = "inside" if low <= float(number) <= high else "OUTSIDE"
                verdict = f"{inside} [{low:.3f}, {high:.3f}]"
            row[f"α={float(alpha):g}"] = f"{float(number):.3f}: {verdict}"
        rows.append(row)
    return pd.DataFrame(rows)


# What a comparison of two experiments puts side by side, per α.
COMPARED = {
    **{f"worst-{k} target damage": f"metrics.target_damage/worst{k}" for k in WORST_K},
    "mean target damage": "metrics.target_damage/mean",
    "clean accuracy": "metrics.clean_accuracy",
}


def comparison(baseline: str, other: str, runs: dict[str, pd.DataFrame]) -> str:
    """``other − baseline``, paired per seed and α (the same split, subpopulations and poison
    draws where the two differ only in what is compared: a learner, a defense, an attack)."""
    both = pd.concat(
        [normalise(latest_per_job(runs[name])[0]).assign(side=name) for name in (baseline, other)]
    )
    alpha = both[ALPHA].astype(float)
    rows = []
    for label, metric in COMPARED.items():
        if metric not in both:
            continue
        row = {"": label}
        for a in sorted(alpha.unique()):
            at = both[alpha == a]
            diffs = paired_differences(at, at["side"], baseline, other, metric, [SEED])
            mean, half, n = interval(diffs)
            row[f"α={a:g}"] = cell(diffs) + (" *" if n > 1 and abs(mean) > half else "")
        rows.append(row)
    return "\n".join(
        [
            f"## {other} − {baseline}",
            "",
            "Paired per seed and α: the difference of each seed's run in the two experiments, "
            "mean ± 95% interval over seeds (n pairs); * marks an interval that excludes 0.",
            "",
            markdown(pd.DataFrame(rows)),
            "",
        ]
    )


def latest_per_job(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One run per job identity (tag ``subpop.job_key``), the latest: two identical sweeps
    started together must not count one seed twice. Runs without the tag are all kept."""
    if JOB_KEY not in runs or runs.empty:
        return runs, 0
    keyed = runs[JOB_KEY].notna()
    latest = runs[keyed].sort_values("start_time").drop_duplicates(JOB_KEY, keep="last")
    kept = pd.concat([latest, runs[~keyed]]).sort_index()
    return kept, len(runs) - len(kept)


def durations(runs: pd.DataFrame) -> tuple[str, pd.Series]:
    """The whole job's time where the pipeline logged it, else the MLflow run's start to end,
    which begins after the data is loaded; each column is named for what it measures."""
    if JOB_TIME in runs and runs[JOB_TIME].notna().all():
        return "job time", runs[JOB_TIME]
    return "run time", (runs["end_time"] - runs["start_time"]).dt.total_seconds()


def side_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per alpha: clean accuracy, collateral of the worst 5, subpopulations, runs, time."""
    time_name, seconds = durations(runs)
    grouped = list(runs.assign(seconds=seconds).groupby(runs[ALPHA].astype(float)))
    return pd.DataFrame(
        {
            "α": [f"{a:g}" for a, _ in grouped],
            "clean accuracy": [cell(g["metrics.clean_accuracy"]) for _, g in grouped],
            "collateral (worst 5)": [
                cell(g["metrics.collateral_damage/worst5"]) for _, g in grouped
            ],
            "attacked": [f"{g['metrics.subpops/attacked'].mean():.0f}" for _, g in grouped],
            "no test points": [
                f"{g['metrics.subpops/no_test_points'].mean():.0f}" for _, g in grouped
            ],
            "runs": [str(len(g)) for _, g in grouped],
            f"mean {time_name} (s)": [f"{g['seconds'].mean():.0f}" for _, g in grouped],
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
    """Sort group keys numerically where they are numbers ("50" before "100"), missing last."""

    def number(value: object) -> tuple:
        if pd.isna(value):
            return (2, 0.0, "")
        try:
            return (0, float(value), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(value))

    return tuple(number(v) for v in key)


def markdown(table: pd.DataFrame) -> str:
    """Markdown table that prints cells as formatted here (tabulate would re-parse numbers)."""
    return table.to_markdown(index=False, disable_numparse=True)


def experiment_report(
    experiment: str, runs: pd.DataFrame, paper: dict[str, Any] | None, plot_path: Path
) -> str:
    """One experiment's markdown; the paper's numbers only beside groups with its setting."""
    runs, dropped = latest_per_job(runs)
    parts = sections(normalise(runs), None if paper is None else paper.get("setting", {}))
    lines = [f"## {experiment}", ""]
    if dropped:
        lines += [
            f"{dropped} duplicate run(s) of the same job (same `subpop.job_key`) left out: "
            "the latest run of each job counts once.",
            "",
        ]
    for part in parts:
        if part.title:
            lines += [f"### {part.title}", ""]
        table = paper_table(part.runs)
        lines += ["Target damage (ours):", "", markdown(table), ""]
        if table.map(lambda v: str(v).endswith(FEWER)).any().any():
            attacked = part.runs[ATTACKED].min() if ATTACKED in part.runs else "fewer"
            lines += [
                f"{FEWER}: these runs attacked {attacked:.0f} subpopulations, fewer than k; "
                "the cell is the mean over those.",
                "",
            ]
        differences = alpha_differences(part.runs)
        if differences is not None:
            lines += ["Paired differences between α (per seed):", "", markdown(differences), ""]
        if part.is_paper_setting:
            lines += [
                f"Paper, {paper['table']} (clean accuracy {paper['clean_accuracy']}):",
                "",
                markdown(reference_table(paper)),
                "",
                "The paper's single runs against our 95% prediction interval for one run:",
                "",
                markdown(paper_check(paper, part.runs)),
                "",
            ]
        lines += [markdown(side_table(part.runs)), ""]
    if paper is not None and not any(part.is_paper_setting for part in parts):
        setting = ", ".join(f"{k}={v}" for k, v in paper.get("setting", {}).items())
        lines += [f"No runs with the setting of the paper's {paper['table']} ({setting}).", ""]
    plot(
        [(p.title, curves(p.runs), paper if p.is_paper_setting else None) for p in parts],
        plot_path,
    )
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
        help="MLflow experiment name (repeatable; default: every one with finished job runs)",
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
        "--compare",
        nargs=2,
        action="append",
        default=[],
        metavar=("BASELINE", "OTHER"),
        help="paired per-seed differences OTHER − BASELINE of two experiments (repeatable)",
    )
    parser.add_argument(
        "--paper",
        default="sweeps/paper.yaml",
        help="the paper's numbers per experiment (YAML); '' for none",
    )
    return parser.parse_args(argv)


def job_runs(args: argparse.Namespace) -> tuple[Tracker, dict[str, pd.DataFrame]]:
    """Every run to report, read before anything is written; an empty store is an error."""
    tracker = Tracker(uri=args.tracking_uri, dir=args.tracking_dir)
    if not tracker.store_exists():
        raise ConfigError(
            f"no MLflow store at {tracker.uri}: nothing to report (run an experiment first)"
        )
    tracker.check()
    experiments = args.experiment or tracker.experiments_with_jobs()
    compared = [name for pair in args.compare for name in pair]
    experiments = [*experiments, *(e for e in dict.fromkeys(compared) if e not in experiments)]
    if not experiments:
        raise ConfigError(f"no finished job runs at {tracker.uri}: nothing to report")
    runs = {e: tracker.job_runs(e) for e in experiments}
    for experiment, found in runs.items():
        if found.empty:
            raise ConfigError(
                f"experiment {experiment!r} has no finished job runs at {tracker.uri}"
            )
    return tracker, runs


def main(argv: list[str]) -> None:
    args = parse(argv)
    tracker, runs = job_runs(args)
    papers = {}
    if args.paper and Path(args.paper).is_file():
        papers = OmegaConf.to_container(OmegaConf.load(args.paper))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = {e: out.with_name(f"{out.stem}_{e}.png") for e in runs}
    parts = [f"# Subpopulation attack results\n\nMachine: {machine()}.\n\n{INTERVALS}\n"]
    parts += [experiment_report(e, r, papers.get(e), plots[e]) for e, r in runs.items()]
    parts += [comparison(baseline, other, runs) for baseline, other in args.compare]
    if args.notes:
        parts.append(Path(args.notes).read_text())
    text = "\n".join(parts)
    out.write_text(text)
    tracker.report_run([out, *plots.values()], covers=list(runs))
    print(text)
    print(f"written: {out} and {', '.join(str(p) for p in plots.values())}")
