"""`subpop report`: MLflow runs back into the paper's table shape, plus a plot.

For each experiment: finished job runs (one per job identity) are grouped by every config value
that differs between them (except alpha, which becomes the columns, and seed, which is averaged
over), and each group is printed as the paper prints it: rows worst-1/5/10 target damage,
columns alpha, with clean accuracy, mean subpopulation size and the collateral of the worst 5
beside it. Each cell is the mean over seeds with the half-width of its 95% Student-t confidence
interval; differences between α values are paired per seed; the paper's single runs are judged
against our prediction interval for one run.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import OmegaConf

from subpop_runner.arguments import ArgumentParser, file_text, output_file
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
INTERVALS = (
    "Each cell: mean over seeds ± half-width of the 95% confidence interval of that mean "
    "(Student t: t₀.₉₇₅,ₙ₋₁ · sd / √n, sd with n − 1), and n, the runs it averages; a single run "
    "shows its value and n=1. A worst-k cell marked [mean of m < k] averages the m "
    "subpopulations its runs attacked, fewer than k (with 3 attacked, worst-5 and worst-10 are "
    "both the mean of those 3), never k. The paper's numbers are single runs: each is judged "
    "against our 95% prediction interval for one run, mean ± t · sd · √(1 + 1/n) with the same "
    "t (the interval's half-width × √(n + 1)), not against the interval of our mean, which "
    "shrinks with n while one run's spread does not. A difference between α values is paired: "
    "the difference per seed (the same split, clusters and poison draws at every α), mean ± 95% "
    "interval over seeds, n pairs; * marks one whose interval excludes 0. Each job counts once: "
    "of several finished runs of one job (the same `subpop.job_key`) only the latest is read. "
    "Job time: the whole job; run time: the MLflow run's start to end, which begins after the "
    "data is loaded."
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
    """Target damage per alpha and worst-k for the plot: mean, 95% CI half-width and n, and the
    95% prediction interval for one run (low, high), the yardstick for the paper's runs."""
    rows = []
    for a, g in runs.groupby(runs[ALPHA].astype(float)):
        for k in WORST_K:
            values = g[f"metrics.target_damage/worst{k}"]
            rows.append((a, k, *interval(values), *prediction_interval(values)[:2]))
    return pd.DataFrame(rows, columns=["alpha", "worst", "mean", "half", "n", "low", "high"])


def cell(values: pd.Series) -> str:
    mean, half, n = interval(values)
    if n == 0:
        return "–"
    if n == 1:
        return f"{mean:.3f} (n=1)"
    return f"{mean:.3f} ± {half:.3f} (n={n})"


def fewer_than_k(runs: pd.DataFrame, k: int) -> str:
    """The mark of a worst-k that is not over k: runs that attacked m < k subpopulations log
    the mean of those m (`metrics.summarize` takes what there is), so worst-5 and worst-10 over
    3 are the same number. '' when every run attacked k or more."""
    if ATTACKED not in runs:
        return ""
    attacked = runs[ATTACKED].dropna()
    fewer = attacked[attacked < k]
    if fewer.empty:
        return ""
    counts = "/".join(f"{m:.0f}" for m in sorted(fewer.unique()))
    some = f" in {len(fewer)} of {len(attacked)} runs" if len(fewer) < len(attacked) else ""
    return f" [mean of {counts} < k{some}]"


def paper_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows worst-1/5/10; columns: target damage per alpha, then mean aux size."""
    by_alpha = runs.groupby(runs[ALPHA].astype(float))
    rows = []
    for k in WORST_K:
        row = {"worst": k}
        row |= {
            f"α={a:g}": cell(g[f"metrics.target_damage/worst{k}"]) + fewer_than_k(g, k)
            for a, g in by_alpha
        }
        row["mean aux size"] = f"{runs[f'metrics.subpop_size_aux/worst{k}'].mean():.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def paired_cell(diffs: pd.Series) -> str:
    """Paired differences: mean ± 95% interval over the pairs (n pairs); * when it excludes 0."""
    mean, half, n = interval(diffs)
    return cell(diffs) + (" *" if n > 1 and abs(mean) > half else "")


def paired_table(
    runs: pd.DataFrame,
    axis: pd.Series,
    contrasts: Sequence[tuple[str, object, object]],
    metrics: Mapping[str, str],
    pair_on: Sequence[str],
    worst_k: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """The table of a claimed difference, whatever is compared on the same seeds (α, a layer, a
    defense before and after, an attack against label flipping): a row per metric (label:
    column; absent ones left out), a column per contrast (label, baseline, other) holding the
    metric at ``axis == other`` minus at ``axis == baseline``, one difference per value of
    ``pair_on`` (the seed and every other group column) as `paired_cell`. A metric that is a
    worst-k (``worst_k``, label: k) is marked where the runs of that contrast attacked fewer
    than k subpopulations (`fewer_than_k`)."""
    worst_k = worst_k or {}
    rows = []
    for label, metric in metrics.items():
        if metric not in runs:
            continue
        row = {"": label}
        for name, baseline, other in contrasts:
            diffs = paired_differences(runs, axis, baseline, other, metric, pair_on)
            pair = runs[axis.isin([baseline, other])]
            mark = fewer_than_k(pair, worst_k[label]) if label in worst_k else ""
            row[name] = paired_cell(diffs) + mark
        rows.append(row)
    return pd.DataFrame(rows)


def alpha_differences(runs: pd.DataFrame) -> pd.DataFrame | None:
    """Worst-k target damage, paired per seed between consecutive α values (and the largest
    against the smallest where there are three or more); None with a single α."""
    alpha = runs[ALPHA].astype(float)
    values = sorted(alpha.unique())
    contrasts = [(f"α={b:g} − α={a:g}", a, b) for a, b in zip(values, values[1:], strict=False)]
    if len(values) > 2:
        contrasts.append((f"α={values[-1]:g} − α={values[0]:g}", values[0], values[-1]))
    if not contrasts:
        return None
    table = paired_table(
        runs,
        alpha,
        contrasts,
        {str(k): f"metrics.target_damage/worst{k}" for k in WORST_K},
        [SEED, *group_columns(runs)],
        worst_k={str(k): k for k in WORST_K},
    )
    return table.rename(columns={"": "worst"})


DEFENDED = "metrics.defended_target_damage/worst5"


def defense_cells(runs: pd.DataFrame, k: int = 5) -> dict[str, str]:
    """One α's runs of a defended experiment, the paper's Table 11 and 12 columns: worst-k
    target damage before (undefended) and after (the same subpopulations, defended), their
    paired difference per run, what the defense removed and what it cost."""
    worst = f"worst{k}"
    metric = lambda name: runs[f"metrics.{name}"]  # noqa: E731
    accuracy_cost = metric("clean_accuracy") - metric("defended_accuracy/mean")
    # A defense's intermediate or extra victims (fine-pruning's pruned, certified's certified).
    stages = {
        column.removeprefix("metrics.").split("_target_damage")[0]: column
        for column in runs.columns
        if column.endswith(f"_target_damage/{worst}") and "defended_" not in column
    }
    return {
        f"worst-{k} before": cell(metric(f"target_damage/{worst}")) + fewer_than_k(runs, k),
        f"worst-{k} after": cell(metric(f"defended_target_damage/{worst}")),
        **{f"worst-{k} {stage}": cell(runs[column]) for stage, column in stages.items()},
        "before − after (paired)": paired_cell(metric(f"target_damage_reduction/{worst}")),
        "poison found": cell(metric(f"poison_found/{worst}")),
        "precision": cell(metric(f"poison_precision/{worst}")),
        "rows removed": cell(metric(f"removed_fraction/{worst}")),
        "clean removed in S": cell(metric(f"clean_removed_in_subpop/{worst}")),
        "clean removed outside S": cell(metric(f"clean_removed_outside/{worst}")),
        "collateral after": cell(metric(f"defended_collateral_damage/{worst}")),
        "accuracy cost (paired)": paired_cell(accuracy_cost),
        "rounds": f"{metric('defense_rounds/mean').mean():.1f}",
        "defense time (s)": f"{metric('defense_seconds').mean():.0f}",
    }


def defense_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows: the `defense_cells`; columns: α."""
    by_alpha = runs.groupby(runs[ALPHA].astype(float))
    columns = {f"α={a:g}": defense_cells(g) for a, g in by_alpha}
    return pd.DataFrame(columns).rename_axis("worst 5 (by undefended damage)").reset_index()


def defenses_overview(runs: dict[str, pd.DataFrame]) -> str | None:
    """Every defended experiment side by side per α (paper Tables 11 and 12 in one); None when
    no experiment ran a defense."""
    rows = []
    for name, found in runs.items():
        found = normalise(latest_per_job(found)[0])
        if DEFENDED not in found:
            continue
        found = found[found[DEFENDED].notna()]  # a sweep over defenses logs none beside them
        defenses = found.get("tags.choice.defense", pd.Series("?", index=found.index))
        for (defense, a), g in found.groupby([defenses.fillna("?"), found[ALPHA].astype(float)]):
            rows.append({"experiment": name, "defense": defense, "α": f"{a:g}"} | defense_cells(g))
    if not rows:
        return None
    return "\n".join(
        [
            "## Defenses side by side",
            "",
            "Per defended experiment and α, over the 5 subpopulations the attack damaged most "
            "without the defense (the paper's Table 11 and 12 columns). Before: the undefended "
            "victim; after: the defended victim of the same seed, subpopulation and poisons, "
            "both against the same clean victim; their difference is paired per run "
            "(* excludes 0). Poison found: the share of the poisons removed (recall); "
            "precision: the share of the removed rows that were poison; rows removed: of the "
            "victim's training rows; clean removed in / outside S: the shares of the clean "
            "training rows inside / outside the target subpopulation that were removed; "
            "accuracy cost: clean accuracy minus the defended victims' mean test accuracy.",
            "",
            markdown(pd.DataFrame(rows)),
            "",
        ]
    )


ATTACK = "tags.choice.attack"
CONF = Path(__file__).resolve().parent.parent / "conf"
# The attack the others are paired against in the attacks table.
BASELINE = "label_flip"


def options(group: str, conf: Path = CONF) -> dict[str, Path]:
    """A config group's options (``conf/<group>/*.yaml``) by name, sorted: what the report
    and the bench go through instead of lists kept by hand."""
    return {path.stem: path for path in sorted((conf / group).glob("*.yaml"))}


def attack_labels(conf: Path = CONF) -> dict[str, str]:
    """Each ``conf/attack`` option's label in the tables (its class's declared `label`, else
    the option's name), label flipping first, the others by name. An option whose class
    cannot be imported here (a user's plugin off the path) keeps its name."""
    labels = {}
    found = options("attack", conf)
    for option in sorted(found, key=lambda name: (name != BASELINE, name)):
        module, _, name = str(OmegaConf.load(found[option]).get("_target_", "")).rpartition(".")
        try:
            label = getattr(importlib.import_module(module), name).label
        except (ImportError, ValueError, AttributeError):
            label = ""
        labels[option] = label or option
    return labels


SETTING = ("tags.choice.dataset", "tags.choice.model", "tags.choice.defense")


def attack_variants(runs: pd.DataFrame) -> pd.Series:
    """Each run's attack as the table names it: LF, GO, INF, followed by the attack settings
    that differ between that attack's runs (α aside), e.g. ``GO (epsilon=0.0627)``."""
    names = attack_labels()
    labels = runs[ATTACK].map(lambda option: names.get(option, option))
    for attack, mine in runs.groupby(ATTACK):
        keys = [
            c
            for c in mine.columns
            if c.startswith("params.attack.") and c != ALPHA and mine[c].nunique() > 1
        ]
        for index, row in mine.iterrows():
            if keys:
                settings = ", ".join(
                    f"{c.removeprefix('params.attack.')}={short(row[c])}" for c in keys
                )
                labels[index] = f"{names.get(attack, attack)} ({settings})"
    return labels


def short(value: object) -> str:
    """A number in 3 significant digits (1/510 as 0.00196), anything else as it is."""
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return str(value)


def attack_rows(runs: pd.DataFrame, k: int = 10) -> list[dict[str, str]]:
    """Per attack (`attack_variants`), per α: worst-k target damage (mean ± interval over
    seeds) and the attack's time; then each optimised attack minus label flipping, paired per
    seed; for a defended setting also the defended damage and the share of poisons the defense
    found."""
    alpha = runs[ALPHA].astype(float)
    alphas = sorted(alpha.unique())
    variant = attack_variants(runs)
    labels = attack_labels()
    baseline = labels[BASELINE]
    order = {name: i for i, name in enumerate(labels.values())}
    variants = sorted(variant.unique(), key=lambda v: (order.get(v.split(" ")[0], 9), v))
    metrics = {"target damage": f"metrics.target_damage/worst{k}"}
    defended = f"metrics.defended_target_damage/worst{k}"
    if defended in runs and runs[defended].notna().any():
        metrics["defended damage"] = defended
        metrics["poison found"] = f"metrics.poison_found/worst{k}"
    rows = []
    for name in variants:
        mine = variant == name
        for label, metric in metrics.items():
            row = {"attack": name, "": label}
            for a in alphas:
                chosen = runs[mine & (alpha == a)]
                row[f"α={a:g}"] = (
                    cell(chosen[metric]) + fewer_than_k(chosen, k) if len(chosen) else "–"
                )
            rows.append(row)
        seconds = runs.loc[mine, "metrics.attack_seconds"]
        if seconds.notna().any():
            times = {a: seconds[alpha[mine] == a] for a in alphas}
            rows.append(
                {"attack": name, "": "attack time (s)"}
                | {
                    f"α={a:g}": f"{t.mean():.0f}" if t.notna().any() else "–"
                    for a, t in times.items()
                }
            )
    if baseline not in variants:
        return rows
    for name in variants:
        if name == baseline:
            continue
        for label, metric in metrics.items():
            row = {"attack": f"{name} − {baseline}", "": f"{label} (paired)"}
            for a in alphas:
                at = alpha == a
                diffs = paired_differences(runs[at], variant[at], baseline, name, metric, [SEED])
                row[f"α={a:g}"] = paired_cell(diffs) if len(diffs) else "–"
            rows.append(row)
    return rows


def attacks_overview(runs: dict[str, pd.DataFrame], k: int = 10) -> str | None:
    """Paper Table 8: the attacks side by side per α, for every setting (dataset, model,
    defense) where label flipping and an optimised attack both ran; None when none did."""
    found = [normalise(latest_per_job(r)[0]) for r in runs.values()]
    found = [f for f in found if ATTACK in f]
    every = pd.concat(found, ignore_index=True) if found else pd.DataFrame()
    if every.empty or every[ATTACK].nunique() < 2:
        return None
    if "metrics.attack_seconds" not in every:
        every["metrics.attack_seconds"] = np.nan
    setting = [c for c in SETTING if c in every]
    parts = []
    for key, group in every.groupby(setting, dropna=False):
        if group[ATTACK].nunique() < 2 or "label_flip" not in set(group[ATTACK]):
            continue
        title = ", ".join(str(v) for v in (key if isinstance(key, tuple) else (key,)))
        parts += [f"### {title}", "", markdown(pd.DataFrame(attack_rows(group, k))), ""]
    if not parts:
        return None
    intro = (
        f"## Attacks side by side\n\nThe paper's Table 8 shape: per setting and α, the mean "
        f"target damage over the worst {k} attacked subpopulations (with the 10 most vulnerable "
        "attacked, all of them), mean ± 95% interval over seeds (n); GO − LF and INF − LF: "
        "the difference per seed (the same split, subpopulations and label-flip start), "
        "mean ± 95% interval (n pairs), * where it excludes 0. Attack time: moving the "
        "poisons of every attacked subpopulation of a run, after label flipping.\n"
    )
    return "\n".join([intro, *parts])


def judged(number: float, values: pd.Series) -> str:
    """Whether one run's ``number`` (the paper's) lies inside our 95% prediction interval for
    one run, and the interval."""
    low, high, n = prediction_interval(values)
    if n < 2:
        return "no interval (n<2)"
    return f"{'inside' if low <= number <= high else 'OUTSIDE'} [{low:.3f}, {high:.3f}]"


def paper_check(paper: dict[str, Any], runs: pd.DataFrame) -> pd.DataFrame:
    """Each paper worst-k number against our 95% prediction interval for one run at its α."""
    by_alpha = {a: g for a, g in runs.groupby(runs[ALPHA].astype(float))}
    rows = []
    for k in WORST_K:
        row = {"worst": k}
        for alpha, number in paper["target_damage"].get(f"worst{k}", {}).items():
            runs_at = by_alpha.get(float(alpha))
            verdict = (
                "no runs at this α"
                if runs_at is None
                else judged(float(number), runs_at[f"metrics.target_damage/worst{k}"])
                + fewer_than_k(runs_at, k)
            )
            row[f"α={float(alpha):g}"] = f"{float(number):.3f}: {verdict}"
        rows.append(row)
    return pd.DataFrame(rows)


def paper_scalars(paper: dict[str, Any], runs: pd.DataFrame) -> list[str]:
    """The paper's clean accuracy and collateral at α=1, each against our prediction interval
    for one run. A seed's clean victim is the same at every α, so clean accuracy counts each
    seed once."""
    lines = []
    if "clean_accuracy" in paper and SEED in runs:
        per_seed = runs.groupby(SEED)["metrics.clean_accuracy"].mean()
        number = float(paper["clean_accuracy"])
        lines.append(
            f"clean accuracy {number:.3f}: {judged(number, per_seed)} (n={len(per_seed)} seeds)"
        )
    at_1 = runs[runs[ALPHA].astype(float) == 1.0]
    if "collateral_worst5_alpha1" in paper and not at_1.empty:
        number = float(paper["collateral_worst5_alpha1"])
        verdict = judged(number, at_1["metrics.collateral_damage/worst5"])
        lines.append(f"collateral (worst 5) at α=1 {number:.3f}: {verdict}")
    return lines


# What a comparison of two experiments puts side by side, per α.
COMPARED = {
    **{f"worst-{k} target damage": f"metrics.target_damage/worst{k}" for k in WORST_K},
    "mean target damage": "metrics.target_damage/mean",
    "clean accuracy": "metrics.clean_accuracy",
}


@dataclass(frozen=True)
class Side:
    """One side of ``--compare``: an experiment's runs, or, written ``EXPERIMENT:GROUP=OPTION``,
    those of its runs that chose ``OPTION`` in config group ``GROUP`` (tag ``choice.GROUP``):
    a sweep over learners, defenses or attacks logs them all to one experiment."""

    experiment: str
    group: str | None = None
    option: str | None = None

    def __str__(self) -> str:
        return self.experiment + (f":{self.group}={self.option}" if self.group else "")

    def runs(self, runs: dict[str, pd.DataFrame]) -> pd.DataFrame:
        found = runs[self.experiment]
        if self.group is None:
            return found
        tag = f"tags.choice.{self.group}"
        return found[found[tag] == self.option] if tag in found else found.iloc[:0]


def side(text: str) -> Side:
    """``--compare``'s ``EXPERIMENT`` or ``EXPERIMENT:GROUP=OPTION``."""
    experiment, colon, choice = text.partition(":")
    group, equals, option = choice.partition("=")
    if colon and not (equals and group and option) or not experiment:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not EXPERIMENT or EXPERIMENT:GROUP=OPTION (e.g. "
            "adult_reference_cluster_match:model=sklearn_mlp)"
        )
    return Side(experiment, group or None, option or None)


def comparison(baseline: Side, other: Side, runs: dict[str, pd.DataFrame]) -> str:
    """``other − baseline``, paired per seed and α (the same split, subpopulations and poison
    draws where the two differ only in what is compared: a learner, a defense, an attack)."""
    both = pd.concat(
        [
            normalise(latest_per_job(chosen.runs(runs))[0]).assign(side=str(chosen))
            for chosen in (baseline, other)
        ]
    )
    alpha = both[ALPHA].astype(float)
    worst_k = {f"worst-{k} target damage": k for k in WORST_K}
    columns = [
        paired_table(
            both[alpha == a],
            both.loc[alpha == a, "side"],
            [(f"α={a:g}", str(baseline), str(other))],
            COMPARED,
            [SEED],
            worst_k,
        ).set_index("")
        for a in sorted(alpha.unique())
    ]
    return "\n".join(
        [
            f"## {other} − {baseline}",
            "",
            "Paired per seed and α: the difference of each seed's run in the two experiments, "
            "mean ± 95% interval over seeds (n pairs); * marks an interval that excludes 0.",
            "",
            markdown(pd.concat(columns, axis=1).reset_index()),
            "",
        ]
    )


def latest_per_job(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One run per job identity (tag ``subpop.job_key``), the latest to start (then to end):
    two identical sweeps started together must not count one seed twice. Runs without the tag
    are all kept."""
    if JOB_KEY not in runs or runs.empty:
        return runs, 0
    keyed = runs[JOB_KEY].notna()
    latest = runs[keyed].sort_values(["start_time", "end_time"])
    latest = latest.drop_duplicates(JOB_KEY, keep="last")
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
        lines += ["Target damage (ours):", "", markdown(paper_table(part.runs)), ""]
        if any(fewer_than_k(part.runs, k) for k in WORST_K):
            lines += [
                "[mean of m < k]: these runs attacked m subpopulations, fewer than k, so that "
                "worst-k is the mean over those m, not over k.",
                "",
            ]
        differences = alpha_differences(part.runs)
        if differences is not None:
            lines += ["Paired differences between α (per seed):", "", markdown(differences), ""]
        if part.is_paper_setting:
            accuracy = paper.get("clean_accuracy")
            lines += [
                f"Paper, {paper['table']}"
                + ("" if accuracy is None else f" (clean accuracy {accuracy})")
                + ":",
                "",
                markdown(reference_table(paper)),
                "",
                "The paper's single runs against our 95% prediction interval for one run:",
                "",
                markdown(paper_check(paper, part.runs)),
                "",
            ]
            scalars = paper_scalars(paper, part.runs)
            lines += [*(f"- {line}" for line in scalars), ""] if scalars else []
        lines += [markdown(side_table(part.runs)), ""]
        if DEFENDED in part.runs:
            lines += [
                "The tables above are the undefended victims of these runs; with the defense:",
                "",
                markdown(defense_table(part.runs)),
                "",
            ]
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


# The default report; its folder, which `make clean` removes, is made when missing. Any other
# --out must be in a folder that exists.
DEFAULT_OUT = "reports/report.md"
PAPER = Path(__file__).resolve().parent.parent / "sweeps" / "paper.yaml"


def report_file(text: str) -> Path:
    """``--out``: a file in a folder that exists, or the default."""
    if text == DEFAULT_OUT and not Path(text).parent.exists():
        return Path(text)
    return output_file(text)


def paper_numbers(text: str) -> dict[str, Any]:
    """``--paper``: the paper's numbers per experiment, each with what every table of it reads
    (``table``, and ``target_damage`` of worst-1/5/10 as α: number); '' for none."""
    if not text:
        return {}
    fix = "name a file shaped like sweeps/paper.yaml, or '' for none"
    try:
        papers = OmegaConf.to_container(OmegaConf.load(text))
    except (OSError, ValueError, yaml.YAMLError) as error:
        reason = getattr(error, "strerror", None) or " ".join(str(error).split())
        raise argparse.ArgumentTypeError(f"cannot read {text} ({reason}); {fix}") from None
    if not isinstance(papers, dict):
        raise argparse.ArgumentTypeError(f"{text} is not a mapping of experiments; {fix}")
    for name, paper in papers.items():
        if not _has_paper_numbers(paper):
            raise argparse.ArgumentTypeError(
                f"{text}: {name} lacks table or target_damage.worst1/5/10 as α: number; {fix}"
            )
    return papers


def _has_paper_numbers(paper: object) -> bool:
    if not isinstance(paper, dict) or "table" not in paper:
        return False
    damage = paper.get("target_damage")
    rows = [damage.get(f"worst{k}") for k in WORST_K] if isinstance(damage, dict) else [None]
    return all(
        isinstance(row, dict) and all(_is_number(a) and _is_number(v) for a, v in row.items())
        for row in rows
    )


def _is_number(value: object) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def parse(argv: list[str]) -> argparse.Namespace:
    """The options, each checked (a missing store or experiment is found by `job_runs`)."""
    parser = ArgumentParser(
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
    parser.add_argument(
        "--tracking-dir", default="mlruns", help="the SQLite store's folder (default: mlruns)"
    )
    parser.add_argument(
        "--out",
        type=report_file,
        default=DEFAULT_OUT,
        help=f"markdown file to write, in a folder that exists (default: {DEFAULT_OUT}, whose "
        "folder is made)",
    )
    parser.add_argument(
        "--notes", type=file_text, help="hand-written markdown appended as the discussion"
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        action="append",
        default=[],
        type=side,
        metavar=("BASELINE", "OTHER"),
        help="paired per-seed differences OTHER − BASELINE of two experiments, or of two "
        "choices in one, EXPERIMENT:GROUP=OPTION (e.g. adult_defenses:defense=trim; repeatable)",
    )
    parser.add_argument(
        "--paper",
        type=paper_numbers,
        default=str(PAPER),
        help="the paper's numbers per experiment (YAML; default: sweeps/paper.yaml); '' for none",
    )
    return parser.parse_args(argv)


def job_runs(args: argparse.Namespace) -> tuple[Tracker, dict[str, pd.DataFrame]]:
    """Every run to report, read before anything is written. The store, each experiment named
    and each comparison are checked first, each error naming the option to change."""
    store = "--tracking-uri" if args.tracking_uri else "--tracking-dir"
    tracker = Tracker(uri=args.tracking_uri, dir=args.tracking_dir)
    if not tracker.store_exists():
        raise ConfigError(
            f"{store}: no MLflow store at {tracker.uri}; run an experiment first, or name the "
            "store it logged to"
        )
    try:
        tracker.check()
    except ConfigError as error:
        # Its message names the Hydra key (tracking.uri or tracking.dir) and that key's fix;
        # keep the problem, between the key and the fix, and name this command's option.
        problem = str(error).partition(": ")[2].rpartition("; ")[0]
        fix = (
            "name an MLflow SQLite store in a folder you can write (the report logs a run there)"
            if tracker.local
            else "start the server (e.g. make mlflow-server), or leave --tracking-uri out to "
            "read the SQLite store under --tracking-dir"
        )
        raise ConfigError(f"{store}: {problem}; {fix}") from None
    available = tracker.experiments_with_jobs()
    for baseline, other in args.compare:
        if baseline == other:
            raise ConfigError(
                f"--compare: compares {str(baseline)!r} with itself; name two different "
                "experiments or choices"
            )
    compared = [chosen.experiment for pair in args.compare for chosen in pair]
    named = [("--experiment", e) for e in args.experiment or []]
    for option, name in [*named, *(("--compare", e) for e in compared)]:
        if name not in available:
            known = tracker.client.get_experiment_by_name(name) is not None
            problem = f"{name!r} has no finished job runs" if known else f"no experiment {name!r}"
            valid = ", ".join(available) or "none yet"
            raise ConfigError(
                f"{option}: {problem} at {tracker.uri}; valid: {valid} (the experiments with "
                "finished job runs)"
            )
    experiments = args.experiment or available
    if not experiments:
        raise ConfigError(
            f"{store}: no finished job runs at {tracker.uri}: nothing to report; run an "
            "experiment first"
        )
    experiments = [*experiments, *(e for e in dict.fromkeys(compared) if e not in experiments)]
    runs = {e: tracker.job_runs(e) for e in experiments}
    for chosen in (c for pair in args.compare for c in pair if c.group is not None):
        if chosen.runs(runs).empty:
            found = runs[chosen.experiment].get(f"tags.choice.{chosen.group}", pd.Series())
            valid = ", ".join(sorted(found.dropna().unique())) or "none"
            raise ConfigError(
                f"--compare: no runs of {chosen.experiment!r} chose {chosen.group}="
                f"{chosen.option}; valid options of {chosen.group} there: {valid}"
            )
    return tracker, runs


def main(argv: list[str]) -> None:
    args = parse(argv)
    tracker, runs = job_runs(args)
    out = args.out
    out.parent.mkdir(exist_ok=True)  # only the default's can be missing (`report_file`)
    plots = {e: out.with_name(f"{out.stem}_{e}.png") for e in runs}
    parts = [f"# Subpopulation attack results\n\nMachine: {machine()}.\n\n{INTERVALS}\n"]
    parts += [experiment_report(e, r, args.paper.get(e), plots[e]) for e, r in runs.items()]
    for overview in (defenses_overview(runs), attacks_overview(runs)):
        parts += [] if overview is None else [overview]
    parts += [comparison(baseline, other, runs) for baseline, other in args.compare]
    if args.notes:
        parts.append(args.notes)
    text = "\n".join(parts)
    out.write_text(text)
    tracker.report_run([out, *plots.values()], covers=list(runs))
    print(text)
    print(f"written: {out} and {', '.join(str(p) for p in plots.values())}")
