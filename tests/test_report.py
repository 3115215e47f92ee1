"""`subpop report` on real MLflow SQLite stores holding hand-made job runs.

Per-seed values differ, so a wrong mean or interval shows. Hand-computed for three seeds with
target damage 0.1, 0.2, 0.6: mean 0.3, sd = √(((−0.2)² + (−0.1)² + 0.3²) / 2) = √0.07 = 0.26458,
t₀.₉₇₅,₂ = 4.3027, half-width = 4.3027 · 0.26458 / √3 = 0.65725.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from subpop_runner.errors import ConfigError
from subpop_runner.intervals import prediction_interval
from subpop_runner.report import (
    Side,
    alpha_differences,
    attack_labels,
    attack_rows,
    attack_variants,
    attacks_overview,
    canonical,
    cell,
    comparison,
    defense_cells,
    defense_table,
    defenses_overview,
    durations,
    fewer_than_k,
    group_columns,
    interval,
    judged,
    latest_per_job,
    main,
    matches,
    normalise,
    paired_cell,
    paired_table,
    paper_check,
    paper_scalars,
    paper_table,
    reference_table,
    sections,
    side_table,
)
from subpop_runner.report_plot import figure
from subpop_runner.tracking import Tracker

SEED_DAMAGE = {0: 0.1, 1: 0.2, 2: 0.6}
PAPER = """
adult_cluster_match:
  table: Table 5 (ClusterMatch, k=100)
  setting: {selector.k: "100.0"}
  clean_accuracy: 0.837
  target_damage:
    worst1: {0.5: 0.333, 1.0: 0.375}
    worst5: {0.5: 0.191, 1.0: 0.343}
    worst10: {0.5: 0.121, 1.0: 0.240}
ft:
  table: Table 6 (FT)
  target_damage:
    worst1: {0.5: 0.2, 1.0: 0.4}
    worst5: {0.5: 0.1, 1.0: 0.3}
    worst10: {0.5: 0.1, 1.0: 0.2}
"""


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, made once: making one runs MLflow's schema migrations
    (2-5 s here, most of a test's time), copying it takes milliseconds."""
    db = tmp_path_factory.mktemp("empty_store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def client(tmp_path: Path, empty_store: Path) -> MlflowClient:
    """A store of the test's own at ``tmp_path / "mlruns"``, where `report` reads."""
    (tmp_path / "mlruns").mkdir()
    shutil.copyfile(empty_store, tmp_path / "mlruns" / "mlflow.db")
    return MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def job(
    client: MlflowClient,
    experiment: str,
    params: dict[str, str],
    damage: float,
    status: str = "FINISHED",
    attacked: float = 10.0,
    job_key: str | None = None,
    choices: dict[str, str] | None = None,
    extra: dict[str, float] | None = None,
) -> None:
    """A job run logged as pipeline.run logs one: str params, `summarize`'s metric keys, Hydra's
    ``choices`` as ``choice.*`` tags; the clean accuracy differs by seed (0.80, 0.85, 0.90), as
    real seeds' do."""
    found = client.get_experiment_by_name(experiment)
    eid = found.experiment_id if found else client.create_experiment(experiment)
    tags = {"subpop.role": "job"} | ({"subpop.job_key": job_key} if job_key else {})
    tags |= {f"choice.{group}": option for group, option in (choices or {}).items()}
    run = client.create_run(eid, tags=tags)
    clean = 0.80 + 0.05 * int(params.get("seed", 0))
    metrics = {"clean_accuracy": clean, "collateral_damage/worst5": damage / 10}
    metrics |= {"subpops/attacked": attacked, "subpops/no_test_points": 0.0}
    for k in (1, 5, 10):
        metrics |= {f"target_damage/worst{k}": damage / k, f"subpop_size_aux/worst{k}": 40.0 + k}
    metrics |= extra or {}
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(key, value, 0, 0) for key, value in metrics.items()],
        params=[Param(key, value) for key, value in params.items()],
    )
    client.set_terminated(run.info.run_id, status)


def cluster_store(client: MlflowClient) -> None:
    """k in {50, 100}, alpha 0.5 and 1 ("1.0" from a single run, "1" from a sweep), 3 seeds."""
    for k, shift in (("50", 0.0), ("100", 0.1)):
        for alpha in ("0.5", "1.0", "1"):
            seeds = (0, 1, 2) if alpha == "0.5" else ((0, 1) if alpha == "1.0" else (2,))
            for seed in seeds:
                params = {"attack.alpha": alpha, "seed": str(seed), "selector.k": k}
                # set from the seed (`${seed}`): averaged like it, never a group of its own
                params["selector.random_state"] = str(seed)
                params["tracking.dir"] = "mlruns"
                job(client, "adult_cluster_match", params, SEED_DAMAGE[seed] + shift)


def test_interval_is_the_student_t_half_width_of_the_mean():
    mean, half, n = interval(pd.Series([0.1, 0.2, 0.6]))
    assert (mean, n) == (pytest.approx(0.3), 3) and half == pytest.approx(0.65725, abs=1e-5)
    mean, half, n = interval(pd.Series([0.25, math.nan]))
    assert (mean, n) == (0.25, 1) and math.isnan(half)
    assert cell(pd.Series([0.1, 0.2, 0.6])) == "0.300 ± 0.657 (n=3)"
    assert cell(pd.Series([0.25])) == "0.250 (n=1)"


def test_groups_by_k_with_alpha_columns_and_seeds_averaged(tmp_path, client):
    cluster_store(client)
    runs = normalise(Tracker(dir=str(tmp_path / "mlruns")).job_runs("adult_cluster_match"))
    assert group_columns(runs) == ["params.selector.k"]
    parts = sections(runs, {"selector.k": 100})
    assert [(p.title, p.is_paper_setting) for p in parts] == [
        ("selector.k=50", False),
        ("selector.k=100", True),
    ]
    table = paper_table(parts[1].runs)
    assert list(table.columns) == ["worst", "α=0.5", "α=1", "mean aux size"]
    # k=100 adds 0.1 to every seed: mean 0.4, same spread; alpha "1.0" and "1" are one column
    # holding seeds 0, 1 and 2.
    assert table.loc[0, "α=0.5"] == "0.400 ± 0.657 (n=3)"
    assert table.loc[0, "α=1"] == "0.400 ± 0.657 (n=3)"
    assert table.loc[1, "α=0.5"] == "0.080 ± 0.131 (n=3)"  # worst-5 logged as damage / 5
    assert table.loc[2, "mean aux size"] == "50.0"


def test_headings_show_only_the_keys_each_group_has():
    runs = pd.DataFrame(
        {
            "params.attack.alpha": ["1", "1"],
            "params.selector.k": ["100", None],
            "params.selector.max_size": [None, "100.0"],
        }
    )
    assert [p.title for p in sections(normalise(runs), None)] == [
        "selector.k=100",
        "selector.max_size=100",
    ]


def test_paper_setting_matches_numbers_as_numbers():
    runs = normalise(pd.DataFrame({"params.selector.k": ["100.0", "100"], "params.x": ["a", "a"]}))
    assert matches(runs, {"selector.k": 100, "x": "a"})
    assert not matches(runs, {"selector.k": 50})
    assert not matches(runs, {"selector.columns": "a"})  # a key the runs lack


def test_time_column_says_what_it_measures():
    runs = pd.DataFrame(
        {
            "start_time": pd.to_datetime(["2026-01-01 00:00:00"] * 2),
            "end_time": pd.to_datetime(["2026-01-01 00:01:00", "2026-01-01 00:02:00"]),
        }
    )
    name, seconds = durations(runs)
    assert name == "run time" and list(seconds) == [60, 120]
    name, seconds = durations(runs.assign(**{"metrics.job_seconds": [70.0, 130.0]}))
    assert name == "job time" and list(seconds) == [70, 130]


def report(tmp_path: Path, *args: str) -> str:
    paper = tmp_path / "paper.yaml"
    paper.write_text(PAPER)
    out = tmp_path / "reports" / "r.md"
    out.parent.mkdir()  # --out names a file in a folder that exists
    main(
        [
            *args,
            "--tracking-dir",
            str(tmp_path / "mlruns"),
            "--out",
            str(out),
            "--paper",
            str(paper),
        ]
    )
    text = out.read_text()
    markdown_tables(text)  # every table renders as one
    return text


def test_report_puts_the_paper_beside_its_setting_only(tmp_path, client):
    cluster_store(client)
    text = report(tmp_path, "-e", "adult_cluster_match")
    k50, k100 = text.split("### selector.k=50")[1].split("### selector.k=100")
    assert "Paper, Table 5" not in k50 and "Paper, Table 5" in k100
    # each table under the caption that says whose numbers it holds
    captions = [
        "Target damage (ours):",
        "Paired differences between α (per seed):",
        "Paper, Table 5 (ClusterMatch, k=100) (clean accuracy 0.837):",
        "The paper's single runs against our 95% prediction interval for one run:",
    ]
    for caption in captions:
        assert f"\n{caption}\n\n|" in k100, caption
    assert "t₀.₉₇₅,ₙ₋₁" in text and text.count("t₀.₉₇₅,ₙ₋₁") == 1
    assert (tmp_path / "reports" / "r_adult_cluster_match.png").stat().st_size > 1000


def test_a_defended_experiment_gets_its_defense_table_and_a_missing_paper_setting_is_said(
    tmp_path, client
):
    """Below the undefended tables of a defended experiment, the sentence and the defense
    table; an experiment the paper lists whose runs never had its setting says so."""
    defended = {
        name: 0.1
        for name in [
            "defended_target_damage/worst5", "target_damage_reduction/worst5",
            "poison_found/worst5", "poison_precision/worst5", "removed_fraction/worst5",
            "clean_removed_in_subpop/worst5", "clean_removed_outside/worst5",
            "defended_collateral_damage/worst5", "defended_accuracy/mean",
            "defense_rounds/mean", "defense_seconds",
        ]
    }  # fmt: skip
    for seed in range(3):
        params = {"attack.alpha": "1", "seed": str(seed), "selector.k": "50"}
        job(client, "adult_cluster_match", params, 0.3, extra=defended)
    text = report(tmp_path, "-e", "adult_cluster_match")
    section = text.split("## adult_cluster_match")[1]
    assert (
        "\nThe tables above are the undefended victims of these runs; with the defense:\n\n"
        "| worst 5 (by undefended damage)" in section
    )
    assert "| poison found " in section and "| 0.100 ± 0.000 (n=3)" in section
    # the paper's Table 5 row is for k=100; these runs are k=50
    assert "\nNo runs with the setting of the paper's Table 5 (ClusterMatch, k=100) " in section
    assert "(selector.k=100.0).\n\n" in section


def test_report_covers_every_experiment_with_finished_jobs_in_its_own_run(tmp_path, client):
    cluster_store(client)
    job(client, "adult_feature_match", {"attack.alpha": "1", "seed": "0"}, 0.2)
    job(client, "crashed", {"attack.alpha": "1", "seed": "0"}, 0.2, status="FAILED")
    text = report(tmp_path)
    assert "## adult_cluster_match" in text and "## adult_feature_match" in text
    assert "## crashed" not in text
    assert "| 0.200 (n=1) |" in text.split("## adult_feature_match")[1]  # one run: no interval
    (run,) = client.search_runs([client.get_experiment_by_name("reports").experiment_id])
    assert run.data.tags["subpop.role"] == "report"
    assert run.data.tags["subpop.report_of"] == "adult_cluster_match, adult_feature_match"
    jobs = client.get_experiment_by_name("adult_cluster_match").experiment_id
    assert {r.data.tags["subpop.role"] for r in client.search_runs([jobs])} == {"job"}


def test_empty_store_is_one_error_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no MLflow store at sqlite:///.*mlflow.db"):
        main([])
    assert list(tmp_path.iterdir()) == []


def test_store_without_finished_jobs_is_one_error_and_creates_nothing(
    tmp_path, client, monkeypatch
):
    job(client, "crashed", {"attack.alpha": "1", "seed": "0"}, 0.2, status="FAILED")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no finished job runs at"):
        main([])
    with pytest.raises(ConfigError, match="'crashed' has no finished job runs"):
        main(["-e", "crashed"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mlflow.db", "mlruns"]
    assert client.get_experiment_by_name("reports") is None


@pytest.mark.parametrize("n_panels", [1, 3])
@pytest.mark.parametrize("with_paper", [False, True])
def test_plot_legend_stays_inside_the_figure(n_panels, with_paper):
    """Worst-1/5/10 curves, with or without the paper's lines: no legend entry is cut off at
    the figure's edge, one panel or several."""
    curves = pd.DataFrame(
        [
            {"alpha": a, "worst": k, "mean": 0.1 * k, "half": 0.05, "low": 0.0, "high": k}
            for a in (0.5, 1.0, 2.0)
            for k in (1, 5, 10)
        ]
    )
    paper = {"target_damage": {f"worst{k}": {0.5: 0.1, 1: 0.2, 2: 0.3} for k in (1, 5, 10)}}
    fig = figure([(f"panel {i}", curves, paper if with_paper else None) for i in range(n_panels)])
    fig.canvas.draw()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert len(legend.get_texts()) == (7 if with_paper else 3)
    assert box.x0 >= fig.bbox.x0 and box.x1 <= fig.bbox.x1 and box.y0 >= fig.bbox.y0


def test_plot_shades_the_prediction_interval_where_the_paper_is_drawn():
    """The paper's single runs are drawn over our interval for one run, not only beside the
    interval of our mean; a band past ±1 (two seeds) is cut at ±1, where damage ends."""
    curves = pd.DataFrame(
        [
            {"alpha": a, "worst": k, "mean": 0.3, "half": 0.1, "low": -0.2 * k, "high": 3.0}
            for a in (0.5, 1.0)
            for k in (1, 5, 10)
        ]
    )
    paper = {"target_damage": {f"worst{k}": {0.5: 0.1, 1: 0.2} for k in (1, 5, 10)}}
    with_paper, without = figure([("paper setting", curves, paper), ("other", curves, None)]).axes
    bands = [c for c in with_paper.collections if isinstance(c, PolyCollection)]
    assert not [c for c in without.collections if isinstance(c, PolyCollection)]
    lows = sorted(round(b.get_paths()[0].vertices[:, 1].min(), 6) for b in bands)
    assert lows == [-1.0, -1.0, -0.2]  # worst-1 at -0.2; worst-5 and worst-10 cut at -1
    assert max(b.get_paths()[0].vertices[:, 1].max() for b in bands) == 1.0


def test_side_table_averages_every_seed(tmp_path, client):
    cluster_store(client)
    runs = normalise(Tracker(dir=str(tmp_path / "mlruns")).job_runs("adult_cluster_match"))
    k100 = sections(runs, None)[1].runs
    table = side_table(k100)
    # seeds 0, 1, 2 log clean accuracy 0.80, 0.85, 0.90: reading one seed would not give this
    assert table.loc[0, "clean accuracy"] == "0.850 ± 0.124 (n=3)"
    assert table.loc[0, "runs"] == "3"


def test_worst_k_over_fewer_attacked_subpopulations_is_marked(tmp_path, client):
    """FT attacks 3 clusters, so its worst-5 and worst-10 are both the mean of those 3: every
    table that shows them (ours, the paired differences, the paper check) says so."""
    for alpha, gain in (("0.5", 0.0), ("1", 0.1)):
        for seed in (0, 1):
            params = {"attack.alpha": alpha, "seed": str(seed)}
            job(client, "ft", params, 0.3 + 0.2 * seed + gain, attacked=3.0)
    text = report(tmp_path, "-e", "ft")
    tables = {
        name: text.split(name)[1].split("\n\n", 2)[1]
        for name in ("Target damage (ours):", "Paired differences", "The paper's single runs")
    }
    for name, table in tables.items():
        header, _, *lines = [
            [c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()
        ]
        alphas = [i for i, column in enumerate(header) if column.startswith("α=")]
        cells = {line[0]: [line[i] for i in alphas] for line in lines}
        assert list(cells) == ["1", "5", "10"] and alphas, name
        assert not any("[mean of 3 < k]" in value for value in cells["1"]), name
        assert all("[mean of 3 < k]" in value for value in cells["5"] + cells["10"]), name
    assert "these runs attacked m subpopulations, fewer than k" in text
    assert "Paper, Table 6 (FT):" in text  # a paper entry without a clean accuracy


def test_fewer_than_k_names_the_count_and_the_runs_it_holds_for():
    runs = pd.DataFrame({"metrics.subpops/attacked": [3.0, 12.0]})
    assert fewer_than_k(runs, 1) == ""
    assert fewer_than_k(runs, 5) == " [mean of 3 < k in 1 of 2 runs]"
    assert fewer_than_k(runs.assign(**{"metrics.subpops/attacked": [3.0, 4.0]}), 10) == (
        " [mean of 3/4 < k]"
    )
    assert fewer_than_k(pd.DataFrame({"params.seed": ["0"]}), 10) == ""  # runs that lack it


def test_paper_numbers_are_judged_against_a_prediction_interval_for_one_run():
    runs = pd.DataFrame(
        {
            "params.attack.alpha": ["1"] * 3,
            **{f"metrics.target_damage/worst{k}": [0.1, 0.2, 0.6] for k in (1, 5, 10)},
        }
    )
    paper = {"target_damage": {f"worst{k}": {1.0: v} for k, v in ((1, 1.4), (5, 0.9), (10, 0.0))}}
    check = paper_check(paper, runs)
    assert list(check.columns) == ["worst", "α=1"] and list(check["worst"]) == [1, 5, 10]
    # mean 0.3, sd 0.2646, t 4.303: the mean's interval is 0.3 ± 0.657, one run's
    # 0.3 ± 0.657 · √(3 + 1) = 0.3 ± 1.314. 1.4 lies outside the first and inside the second.
    assert check.loc[0, "α=1"] == "1.400: inside [-1.014, 1.614]"
    assert check.loc[2, "α=1"] == "0.000: inside [-1.014, 1.614]"
    outside = paper_check({"target_damage": {"worst1": {1.0: 1.7, 2.0: 0.5}}}, runs)
    assert outside.loc[0, "α=1"] == "1.700: OUTSIDE [-1.014, 1.614]"
    assert outside.loc[0, "α=2"] == "0.500: no runs at this α"


def test_the_papers_clean_accuracy_counts_each_seed_once():
    """Seeds 0-2 at two α values: the clean victim (0.80, 0.85, 0.90) is the same at both, so
    the interval for one run is over 3 values, not 6 copies: 0.85 ± 4.303 · 0.05 · √(4/3) =
    [0.602, 1.098] (six copies would give [0.726, 0.974], and put 0.7 outside)."""
    runs = pd.DataFrame(
        {
            "params.attack.alpha": ["0.5"] * 3 + ["1"] * 3,
            "params.seed": ["0", "1", "2"] * 2,
            "metrics.clean_accuracy": [0.80, 0.85, 0.90] * 2,
            "metrics.collateral_damage/worst5": [0.0] * 3 + [0.01, 0.02, 0.03],
        }
    )
    paper = {"clean_accuracy": 0.7, "collateral_worst5_alpha1": 0.05}
    assert paper_scalars(paper, runs) == [
        "clean accuracy 0.700: inside [0.602, 1.098] (n=3 seeds)",
        # α=1 only: 0.02 ± 4.303 · 0.01 · √(4/3) = [-0.030, 0.070]
        "collateral (worst 5) at α=1 0.050: inside [-0.030, 0.070]",
    ]
    assert paper_scalars({"clean_accuracy": 0.5}, runs)[0].startswith("clean accuracy 0.500: OUT")


def test_alpha_differences_are_paired_by_seed():
    """Seeds spread damage widely (0.1 to 0.9) but every seed gains exactly 0.1 from α=1 to
    α=2: unpaired intervals overlap, the paired difference is 0.1 with no spread."""
    base = {0: 0.1, 1: 0.5, 2: 0.9}
    rows = [
        {"params.attack.alpha": a, "params.seed": str(seed), "metrics.target_damage/worst1": d}
        for seed, value in base.items()
        for a, d in (("0.5", value - 0.05), ("1", value), ("2", value + 0.1))
    ]
    runs = pd.DataFrame(rows).assign(
        **{
            f"metrics.target_damage/worst{k}": lambda r: r["metrics.target_damage/worst1"]
            for k in (5, 10)
        }
    )
    table = alpha_differences(runs)
    assert list(table.columns) == ["worst", "α=1 − α=0.5", "α=2 − α=1", "α=2 − α=0.5"]
    assert table.loc[0, "α=2 − α=1"] == "0.100 ± 0.000 (n=3) *"
    assert table.loc[0, "α=2 − α=0.5"] == "0.150 ± 0.000 (n=3) *"
    shuffled = runs.assign(
        **{"params.seed": runs["params.seed"].sample(frac=1, random_state=1).values}
    )
    assert alpha_differences(shuffled).loc[0, "α=2 − α=1"] != table.loc[0, "α=2 − α=1"]


def test_alpha_differences_pair_on_every_group_column_as_well_as_the_seed():
    """k=100 adds 0.3 to every run; seed 2 has no k=100 run at α=2. Pairing on the seed alone
    would set seed 2's α=2 k=50 run against the mean of its α=1 k=50 and k=100 runs (a
    difference of 0.1 − 0.15); pairing on the seed and k drops that unpaired run."""
    rows = [
        {
            "params.attack.alpha": alpha,
            "params.seed": str(seed),
            "params.selector.k": k,
            **{f"metrics.target_damage/worst{w}": 0.1 * seed + shift + gain for w in (1, 5, 10)},
        }
        for seed in (0, 1, 2)
        for k, shift in (("50", 0.0), ("100", 0.3))
        for alpha, gain in (("1", 0.0), ("2", 0.1))
        if not (seed == 2 and k == "100" and alpha == "2")
    ]
    table = alpha_differences(pd.DataFrame(rows))
    assert table.loc[0, "α=2 − α=1"] == "0.100 ± 0.000 (n=5) *"


def test_the_paired_table_takes_any_axis_and_baseline():
    """A defense, before and after, on the same seeds: the table later defenses and attacks
    use. Seeds spread damage from 0.1 to 0.7; filtering removes 0.05 from each. A third
    setting attacked 3 subpopulations where the others attacked 10: only its contrast's
    worst-5 cell is marked as a mean of 3."""
    runs = pd.DataFrame(
        [
            {
                "params.defense": d,
                "params.seed": str(seed),
                "metrics.subpops/attacked": 3.0 if d == "few" else 10.0,
                "metrics.target_damage/worst1": v,
                "metrics.target_damage/worst5": v,
            }
            for seed, base in ((0, 0.1), (1, 0.4), (2, 0.7))
            for d, v in (("none", base), ("filter", base - 0.05), ("few", base))
        ]
    )
    table = paired_table(
        runs,
        runs["params.defense"],
        [("filter − none", "none", "filter"), ("few − none", "none", "few")],
        {"worst-1": "metrics.target_damage/worst1", "worst-5": "metrics.target_damage/worst5"},
        ["params.seed"],
        worst_k={"worst-1": 1, "worst-5": 5},
    )
    assert table.to_dict("records") == [
        {
            "": "worst-1",
            "filter − none": "-0.050 ± 0.000 (n=3) *",
            "few − none": "0.000 ± 0.000 (n=3)",
        },
        {
            "": "worst-5",
            "filter − none": "-0.050 ± 0.000 (n=3) *",
            "few − none": "0.000 ± 0.000 (n=3) [mean of 3 < k in 3 of 6 runs]",
        },
    ]
    logged = paired_table(
        runs, runs["params.defense"], [("f", "none", "filter")], {"worst-10": "absent"}, []
    )
    assert logged.empty  # a metric not logged: no row


def test_the_latest_run_of_a_job_is_kept_by_start_then_end():
    """Job a ran three times: the last two started in the same second (MLflow's times can tie),
    and of those the one that ended later counts, wherever it lies in the search's order."""
    at = pd.Timestamp("2026-12-01 10:00")
    seconds = pd.to_timedelta
    runs = pd.DataFrame(
        {
            "tags.subpop.job_key": ["a", "a", "a", None, None],
            "start_time": at + seconds([0, 1, 1, 0, 0], unit="s"),
            "end_time": at + seconds([9, 5, 3, 1, 1], unit="s"),
            "metrics.target_damage/worst1": [0.1, 0.2, 0.3, 0.4, 0.5],
        }
    )
    kept, dropped = latest_per_job(runs)
    assert dropped == 2  # both untagged runs stay: nothing says they are one job
    assert list(kept["metrics.target_damage/worst1"]) == [0.2, 0.4, 0.5]


def test_two_runs_of_one_job_count_once_and_the_report_says_so(tmp_path, client):
    for damage in (0.2, 0.4):  # the same job twice (two sweeps started together)
        job(client, "dup", {"attack.alpha": "1", "seed": "0"}, damage, job_key="k0")
    job(client, "dup", {"attack.alpha": "1", "seed": "1"}, 0.6, job_key="k1")
    runs = Tracker(dir=str(tmp_path / "mlruns")).job_runs("dup")
    kept, dropped = latest_per_job(runs)
    assert dropped == 1 and sorted(kept["metrics.target_damage/worst1"]) == [0.4, 0.6]
    text = report(tmp_path, "-e", "dup")
    assert "## dup\n\n1 duplicate run(s) of the same job" in text
    assert "0.500 ± " in text and "(n=2)" in text


def test_two_experiments_are_compared_paired_by_seed(tmp_path, client):
    """The reference learner's runs against the batched MLP's: every seed of ``other`` gains
    0.05 on its own seed, whatever the seeds' spread."""
    for seed, damage in SEED_DAMAGE.items():
        params = {"attack.alpha": "1", "seed": str(seed)}
        job(client, "batched", params, damage)
        job(client, "reference", params, damage + 0.05)
    text = report(tmp_path, "-e", "batched", "--compare", "batched", "reference")
    assert "## reference" in text  # named by --compare only, reported all the same
    section = text.split("## reference − batched")[1]
    assert "| worst-1 target damage  | 0.050 ± 0.000 (n=3) * |" in section
    assert "| clean accuracy         | 0.000 ± 0.000 (n=3)   |" in section


def test_two_choices_of_one_sweeps_experiment_are_compared_paired_by_seed(tmp_path, client):
    """A sweep over learners logs both to one experiment: ``EXPERIMENT:GROUP=OPTION`` picks
    each side by its choice tag."""
    for seed, damage in SEED_DAMAGE.items():
        params = {"attack.alpha": "1", "seed": str(seed)}
        job(client, "both", params | {"model.x": "1"}, damage, choices={"model": "mlp"})
        job(client, "both", params | {"model.x": "2"}, damage + 0.05, choices={"model": "ref"})
    text = report(tmp_path, "--compare", "both:model=mlp", "both:model=ref")
    section = text.split("## both:model=ref − both:model=mlp")[1]
    assert "| worst-1 target damage  | 0.050 ± 0.000 (n=3) * |" in section


def test_one_spelling_per_value_and_none_for_a_missing_one():
    assert canonical(1) == canonical("1.0") == canonical(1.0) == canonical("1") == "1"
    assert canonical(0.1 + 0.2) == "0.3" and canonical("1e-3") == "0.001"
    assert canonical(True) == "True" and canonical(False) == "False"  # not "1" and "0"
    assert canonical("hidden") == "hidden"
    assert all(math.isnan(canonical(missing)) for missing in (None, "", math.nan))


def test_the_side_table_pairs_each_alpha_with_its_own_runs():
    runs = pd.DataFrame(
        {
            "params.attack.alpha": ["1", "1", "0.5"],
            "metrics.clean_accuracy": [0.80, 0.90, 0.85],
            "metrics.collateral_damage/worst5": [0.01, 0.03, 0.05],
            "metrics.subpops/attacked": [10.0, 12.0, 7.0],
            "metrics.subpops/no_test_points": [2.0, 4.0, 1.0],
            "metrics.job_seconds": [60.0, 80.0, 30.0],
        }
    )
    assert side_table(runs).to_dict("records") == [
        {
            "α": "0.5",
            "clean accuracy": "0.850 (n=1)",
            "collateral (worst 5)": "0.050 (n=1)",
            "attacked": "7",
            "no test points": "1",
            "runs": "1",
            "mean job time (s)": "30",
        },
        {
            "α": "1",
            "clean accuracy": "0.850 ± 0.635 (n=2)",  # 12.706 · 0.0707 / √2
            "collateral (worst 5)": "0.020 ± 0.127 (n=2)",
            "attacked": "11",
            "no test points": "3",
            "runs": "2",
            "mean job time (s)": "70",
        },
    ]


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in ``text``, as rows of {header: cell}. A table must stand between
    blank lines and every line of it start and end with "|", or it does not render as one."""
    tables, lines = [], text.split("\n")
    for i, line in enumerate(lines):
        if "|" in line and (i == 0 or "|" not in lines[i - 1]):
            assert i > 0 and lines[i - 1] == "", f"no blank line before the table at {line!r}"
            block = []
            for row in lines[i:]:
                if "|" not in row:
                    assert row == "", f"no blank line after the table, at {row!r}"
                    break
                assert row.startswith("|") and row.endswith("|"), row
                block.append([c.strip() for c in row[1:-1].split("|")])
            header, _, *body = block
            tables.append([dict(zip(header, row, strict=True)) for row in body])
    return tables


def defended_runs(alpha: str = "1", attacked: float = 10.0, gain: float = 0.0) -> pd.DataFrame:
    """Three seeds of a defended experiment at one α, each measure with values of its own, so a
    cell under another's label shows. Worst-5 before 0.30-0.32 (+ ``gain``), after 0.20-0.22:
    reduction 0.10, 0.11, 0.09; clean accuracy 0.85-0.87, defended 0.80-0.82: cost 0.05."""
    before = np.array([0.30, 0.32, 0.31]) + gain
    after = np.array([0.20, 0.21, 0.22])
    constant = {
        "poison_found": 0.9,
        "poison_precision": 0.8,
        "removed_fraction": 0.07,
        "clean_removed_in_subpop": 0.4,
        "clean_removed_outside": 0.03,
        "defended_collateral_damage": 0.02,
        "pruned_target_damage": 0.25,  # a defense's intermediate victims (fine-pruning's)
    }
    return pd.DataFrame(
        {
            "params.attack.alpha": [alpha] * 3,
            "params.seed": ["0", "1", "2"],
            "metrics.subpops/attacked": [attacked] * 3,
            "metrics.target_damage/worst5": before,
            "metrics.defended_target_damage/worst5": after,
            "metrics.target_damage_reduction/worst5": before - after,
            "metrics.clean_accuracy": [0.85, 0.86, 0.87],
            "metrics.defended_accuracy/mean": [0.80, 0.81, 0.82],
            "metrics.defense_rounds/mean": [2.0, 3.0, 4.0],
            "metrics.defense_seconds": [10.0, 11.0, 12.0],
            **{f"metrics.{name}/worst5": [value] * 3 for name, value in constant.items()},
        }
    )


def test_defense_cells_put_each_measure_under_its_own_label():
    """Before, after and their paired difference per run (0.100 ± 4.303 · 0.01 / √3), every
    removal share, the collateral after, the accuracy cost paired per run, rounds and time;
    runs that attacked 3 subpopulations mark the worst-5 before as a mean of 3."""
    assert defense_cells(defended_runs(attacked=3.0)) == {
        "worst-5 before": "0.310 ± 0.025 (n=3) [mean of 3 < k]",
        "worst-5 after": "0.210 ± 0.025 (n=3)",
        "worst-5 pruned": "0.250 ± 0.000 (n=3)",
        "before − after (paired)": "0.100 ± 0.025 (n=3) *",
        "poison found": "0.900 ± 0.000 (n=3)",
        "precision": "0.800 ± 0.000 (n=3)",
        "rows removed": "0.070 ± 0.000 (n=3)",
        "clean removed in S": "0.400 ± 0.000 (n=3)",
        "clean removed outside S": "0.030 ± 0.000 (n=3)",
        "collateral after": "0.020 ± 0.000 (n=3)",
        "accuracy cost (paired)": "0.050 ± 0.000 (n=3) *",
        "rounds": "3.0",
        "defense time (s)": "11",
    }


def test_the_defense_table_has_a_row_per_measure_and_a_column_per_alpha():
    runs = pd.concat([defended_runs("0.5"), defended_runs("1", gain=0.1)])
    table = defense_table(runs).set_index("worst 5 (by undefended damage)")
    assert list(table.columns) == ["α=0.5", "α=1"]
    assert list(table.index) == list(defense_cells(runs))
    assert table.loc["worst-5 before"].tolist() == ["0.310 ± 0.025 (n=3)", "0.410 ± 0.025 (n=3)"]


def test_defended_experiments_sit_side_by_side_per_alpha_and_undefended_ones_not():
    trim = pd.concat([defended_runs("0.5"), defended_runs("1", gain=0.1)])
    plain = pd.DataFrame({"params.attack.alpha": ["1"], "metrics.target_damage/worst5": [0.3]})
    text = defenses_overview({"adult_trim": trim.assign(**{"tags.choice.defense": "trim"})})
    assert text.startswith("## Defenses side by side\n")
    (rows,) = markdown_tables(text)
    assert [(r["experiment"], r["defense"], r["α"]) for r in rows] == [
        ("adult_trim", "trim", "0.5"),
        ("adult_trim", "trim", "1"),
    ]
    assert [r["worst-5 before"] for r in rows] == ["0.310 ± 0.025 (n=3)", "0.410 ± 0.025 (n=3)"]
    assert rows[1]["poison found"] == "0.900 ± 0.000 (n=3)"
    both = defenses_overview({"adult_trim": trim, "adult": plain})
    untagged = markdown_tables(both)[0]  # runs from before the defense was tagged
    assert [(r["experiment"], r["defense"]) for r in untagged] == [("adult_trim", "?")] * 2
    assert defenses_overview({"adult": plain}) is None


def test_a_sweeps_experiment_gives_a_row_per_defense_after_an_undefended_experiment():
    """One experiment holding a sweep over defenses (its undefended jobs have no defended
    columns), read after an experiment with no defended run at all; then the caption."""
    plain = pd.DataFrame({"params.attack.alpha": ["1"], "metrics.target_damage/worst5": [0.3]})
    swept = pd.concat(
        [
            defended_runs("1").assign(**{"tags.choice.defense": "trim"}),
            defended_runs("1", gain=0.1).assign(**{"tags.choice.defense": "sever"}),
            plain.assign(**{"tags.choice.defense": "none"}),
        ],
        ignore_index=True,
    )
    text = defenses_overview({"adult": plain, "adult_defenses": swept})
    (rows,) = markdown_tables(text)
    assert [(r["experiment"], r["defense"], r["α"]) for r in rows] == [
        ("adult_defenses", "sever", "1"),
        ("adult_defenses", "trim", "1"),
    ]
    assert [r["worst-5 before"] for r in rows] == ["0.410 ± 0.025 (n=3)", "0.310 ± 0.025 (n=3)"]
    assert text.split("\n")[2] == (
        "Per defended experiment and α, over the 5 subpopulations the attack damaged most "
        "without the defense (the paper's Table 11 and 12 columns). Before: the undefended "
        "victim; after: the defended victim of the same seed, subpopulation and poisons, "
        "both against the same clean victim; their difference is paired per run "
        "(* excludes 0). Poison found: the share of the poisons removed (recall); "
        "precision: the share of the removed rows that were poison; rows removed: of the "
        "victim's training rows; clean removed in / outside S: the shares of the clean "
        "training rows inside / outside the target subpopulation that were removed; "
        "accuracy cost: clean accuracy minus the defended victims' mean test accuracy."
    )
    assert text.split("\n")[1] == "" and text.split("\n")[3] == ""


def test_attacks_sit_side_by_side_with_each_optimised_attack_paired_against_label_flip():
    """Three seeds per attack at one α: GO − LF is the mean of the per-seed differences (the
    same seed's subpopulations), starred when its interval excludes 0; a setting without
    label flipping is not compared."""
    lf, go = np.array([0.10, 0.20, 0.15]), np.array([0.14, 0.26, 0.18])
    seeds = ["0", "1", "2"]

    def runs(
        attack: str, damage: np.ndarray, model: str = "mlp", eps: str = "0.00196078431372549"
    ) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "params.seed": seeds,
                "params.attack.epsilon": [eps if attack != "label_flip" else np.nan] * 3,
                "params.attack.alpha": ["1"] * 3,
                "tags.choice.attack": [attack] * 3,
                "tags.choice.dataset": ["adult"] * 3,
                "tags.choice.model": [model] * 3,
                "tags.choice.defense": ["none"] * 3,
                "metrics.target_damage/worst10": damage,
                "metrics.subpops/attacked": [10.0] * 3,
                # Beside a defended experiment's runs, an undefended one's have none.
                "metrics.defended_target_damage/worst10": np.nan,
                "metrics.attack_seconds": [4.0, 5.0, 6.0] if attack != "label_flip" else np.nan,
            }
        )

    text = attacks_overview(
        {
            "lf": runs("label_flip", lf),
            "go": runs("gradient_optimization", go[::-1].copy()),  # seeds out of step
            "alone": runs("gradient_optimization", go, model="conv"),
            "wide": runs("gradient_optimization", go + 0.1, eps="0.06"),
        }
    )
    rows = {
        (line.split("|")[1].strip(), line.split("|")[2].strip()): line.split("|")[3].strip()
        for line in text.splitlines()
        if line.startswith("| ")
    }
    mean, half, n = interval(pd.Series(go[::-1] - lf))
    assert rows[("GO (epsilon=0.06) − LF", "target damage (paired)")].startswith(
        f"{(go + 0.1 - lf).mean():.3f} ± "
    )
    assert rows[
        ("GO (epsilon=0.00196) − LF", "target damage (paired)")
    ] == f"{mean:.3f} ± {half:.3f} (n=3)" + (" *" if abs(mean) > half else "")
    assert rows[("GO (epsilon=0.00196)", "attack time (s)")] == "5"
    assert rows[("LF", "target damage")].startswith(f"{lf.mean():.3f} ± ")
    assert "conv" not in text  # GO alone: nothing to compare it with
    assert "defended damage" not in text  # no defense ran: no such rows
    assert attacks_overview({"lf": runs("label_flip", lf)}) is None


def attack_runs(attack: str, alpha: str, damage: list[float], **metrics: float) -> pd.DataFrame:
    """Three seeds of one attack at one α of a defended setting: worst-10 damage ``damage``,
    half of it left by the defense, which found 0.8 of the poisons."""
    return pd.DataFrame(
        {
            "params.seed": ["0", "1", "2"],
            "params.attack.alpha": [alpha] * 3,
            "tags.choice.attack": [attack] * 3,
            "metrics.target_damage/worst10": damage,
            "metrics.defended_target_damage/worst10": [d / 2 for d in damage],
            "metrics.poison_found/worst10": [0.8] * 3,
            "metrics.subpops/attacked": [10.0] * 3,
            "metrics.attack_seconds": [np.nan] * 3,
        }
    ).assign(**{f"metrics.{name}": value for name, value in metrics.items()})


def test_attacks_are_compared_in_untimed_and_untagged_settings_and_only_against_lf():
    """Runs from before attack times and defense tags were logged are still compared; a
    setting where GO and INF ran but not label flipping has nothing to be compared with."""
    setting = {"tags.choice.dataset": "adult", "tags.choice.model": "mlp"}
    conv = {"tags.choice.dataset": "adult", "tags.choice.model": "conv"}
    runs = {
        "lf": attack_runs("label_flip", "1", [0.10, 0.20, 0.15]).assign(**setting),
        "go": attack_runs("gradient_optimization", "1", [0.14, 0.26, 0.18]).assign(**setting),
        "go_conv": attack_runs("gradient_optimization", "1", [0.3] * 3).assign(**conv),
        "inf_conv": attack_runs("influence", "1", [0.3] * 3).assign(**conv),
    }
    untimed = {name: r.drop(columns="metrics.attack_seconds") for name, r in runs.items()}
    conv_tagged = untimed | {
        name: untimed[name].assign(**{"tags.choice.defense": "none"})
        for name in ("go_conv", "inf_conv")
    }
    text = attacks_overview(conv_tagged)
    assert "### adult, mlp, nan" in text and "conv" not in text
    (rows,) = markdown_tables(text)
    assert list(dict.fromkeys(r["attack"] for r in rows)) == ["LF", "GO", "GO − LF"]


def test_a_paired_difference_is_starred_from_two_pairs_on():
    assert paired_cell(pd.Series([0.10, 0.11])) == "0.105 ± 0.064 (n=2) *"  # 12.706 · 0.0071 / √2
    assert paired_cell(pd.Series([0.10])) == "0.100 (n=1)"


def test_groups_are_ordered_numbers_by_value_then_names_then_missing():
    runs = pd.DataFrame(
        {
            "params.attack.alpha": ["1"] * 5,
            "params.model.width": ["100", "wide", "50", None, "8"],
        }
    )
    assert [p.title for p in sections(normalise(runs), None)] == [
        "model.width=8",
        "model.width=50",
        "model.width=100",
        "model.width=wide",
        "",
    ]


def test_the_attacks_table_reads_in_the_papers_order_with_gaps_where_an_attack_did_not_run():
    """LF at α 0.5 and 1, GO at α 1 only (attacking 3 subpopulations), INF at both but timed
    at α 1 only: rows LF, GO, INF, then GO − LF and INF − LF, each with the defended damage and
    the poisons found; "–" where nothing ran."""
    lf = [0.10, 0.20, 0.15]
    runs = pd.concat(
        [
            attack_runs("label_flip", "0.5", lf),
            attack_runs("label_flip", "1", lf),
            attack_runs(
                "gradient_optimization",
                "1",
                [0.14, 0.26, 0.18],
                **{"attack_seconds": 5.0, "subpops/attacked": 3.0},
            ),
            attack_runs("influence", "0.5", [0.12, 0.22, 0.17]),
            attack_runs("influence", "1", [0.12, 0.22, 0.17], attack_seconds=8.0),
        ],
        ignore_index=True,
    )
    rows = attack_rows(runs)
    measures = ["target damage", "defended damage", "poison found"]
    paired = [f"{m} (paired)" for m in measures]
    assert [(r["attack"], r[""]) for r in rows] == [
        *(("LF", m) for m in measures),
        *(("GO", m) for m in [*measures, "attack time (s)"]),
        *(("INF", m) for m in [*measures, "attack time (s)"]),
        *(("GO − LF", m) for m in paired),
        *(("INF − LF", m) for m in paired),
    ]
    cells = {(r["attack"], r[""]): (r["α=0.5"], r["α=1"]) for r in rows}
    assert cells[("GO", "target damage")] == ("–", "0.193 ± 0.152 (n=3) [mean of 3 < k]")
    assert cells[("GO", "attack time (s)")] == ("–", "5")
    assert cells[("INF", "attack time (s)")] == ("–", "8")
    assert cells[("LF", "defended damage")][1] == cell(pd.Series(lf) / 2)
    assert cells[("LF", "poison found")] == ("0.800 ± 0.000 (n=3)",) * 2
    assert cells[("GO − LF", "target damage (paired)")][0] == "–"
    assert cells[("INF − LF", "target damage (paired)")] == ("0.020 ± 0.000 (n=3) *",) * 2
    assert cells[("INF − LF", "defended damage (paired)")][1] == "0.010 ± 0.000 (n=3) *"


def test_attack_variants_keep_their_attacks_order_and_an_unknown_attack_comes_last():
    """Two GO variants (their settings differ) sit where GO does, before INF; an attack no
    conf/attack file names (a user's, off the path) comes after every known one."""
    runs = pd.concat(
        [
            attack_runs("my_attack", "1", [0.3] * 3),
            attack_runs("influence", "1", [0.2] * 3),
            attack_runs("gradient_optimization", "1", [0.1] * 3).assign(
                **{"params.attack.epsilon": "0.5"}
            ),
            attack_runs("gradient_optimization", "1", [0.1] * 3).assign(
                **{"params.attack.epsilon": "0.06"}
            ),
            attack_runs("label_flip", "1", [0.1] * 3),
        ],
        ignore_index=True,
    )
    order = list(dict.fromkeys(r["attack"] for r in attack_rows(runs)))
    assert order[:5] == ["LF", "GO (epsilon=0.06)", "GO (epsilon=0.5)", "INF", "my_attack"]


def test_an_attacks_label_names_only_the_settings_that_differ_between_its_runs():
    nan = np.nan
    runs = pd.DataFrame(
        {
            "tags.choice.attack": ["label_flip", *["gradient_optimization"] * 3, "influence"],
            "params.attack.alpha": ["1", "1", "2", "1", "1"],
            "params.attack.epsilon": [nan, "0.06", "0.06", "0.5", "0.06"],
            "params.attack.optimizer": [nan, "adam", "adam", "sgd", "adam"],
            "params.attack.steps": [nan, "10", "10", "10", "10"],  # the same in every GO run
        }
    )
    assert list(attack_variants(runs)) == [
        "LF",
        "GO (epsilon=0.06, optimizer=adam)",
        "GO (epsilon=0.06, optimizer=adam)",
        "GO (epsilon=0.5, optimizer=sgd)",
        "INF",
    ]


def test_attack_labels_come_from_conf_with_label_flip_first(tmp_path):
    """Every conf/attack option is in the tables by its class's label; a new option (here a
    throw-away one whose class declares none, and one whose module is not on the path) by its
    name, after label flipping; nothing is listed by hand."""
    assert attack_labels() == {
        "label_flip": "LF",
        "gradient_optimization": "GO",
        "influence": "INF",
    }
    (tmp_path / "attack").mkdir()
    for name, target in [
        ("label_flip", "subpop_runner.attacks.label_flip.LabelFlip"),
        ("a_plain", "subpop_runner.attacks.base.Attack"),
        ("mine", "not_on_the_path.Mine"),
    ]:
        (tmp_path / "attack" / f"{name}.yaml").write_text(f"_target_: {target}\n")
    assert list(attack_labels(tmp_path).items()) == [
        ("label_flip", "LF"),
        ("a_plain", "a_plain"),
        ("mine", "mine"),
    ]


def test_a_paper_number_is_judged_from_two_runs_on_and_its_interval_is_closed():
    two = pd.Series([0.2, 0.4])
    low, high, _ = prediction_interval(two)
    assert judged(0.3, pd.Series([0.3])) == "no interval (n<2)"
    assert judged(high, two) == f"inside [{low:.3f}, {high:.3f}]"
    assert judged(low, two).startswith("inside [")
    assert judged(high + 1e-6, two).startswith("OUTSIDE [")


def test_the_papers_own_table_is_printed_as_the_paper_gives_it():
    damage = {
        "worst1": {0.5: 0.333, 1.0: 0.375},
        "worst5": {0.5: 0.191, 1.0: 0.343},
        "worst10": {0.5: 0.121, 1.0: 0.24},
    }
    sizes = {"worst1": 12, "worst5": 20.4, "worst10": 31}
    assert reference_table({"target_damage": damage, "size": sizes}).to_dict("records") == [
        {"worst": 1, "α=0.5": "0.333", "α=1": "0.375", "size": 12},
        {"worst": 5, "α=0.5": "0.191", "α=1": "0.343", "size": 20.4},
        {"worst": 10, "α=0.5": "0.121", "α=1": "0.240", "size": 31},
    ]
    assert list(reference_table({"target_damage": damage}).columns) == ["worst", "α=0.5", "α=1"]


def test_a_comparison_is_a_table_per_alpha_with_worst_k_over_fewer_marked():
    """``other`` gains 0.05 over ``baseline`` on every seed at α 0.5 and 0.1 at α 1; both
    attacked 3 subpopulations, so their worst-5 and worst-10 are means of 3."""

    def runs(gain: float) -> pd.DataFrame:
        damage = np.array([0.1, 0.3, 0.2] * 2) + np.repeat([gain, 2 * gain], 3)
        return pd.DataFrame(
            {
                "params.attack.alpha": ["0.5"] * 3 + ["1"] * 3,
                "params.seed": ["0", "1", "2"] * 2,
                "metrics.subpops/attacked": [3.0] * 6,
                "metrics.clean_accuracy": [0.8, 0.82, 0.84] * 2,
                "metrics.target_damage/mean": damage,
                **{f"metrics.target_damage/worst{k}": damage for k in (1, 5, 10)},
            }
        )

    text = comparison(Side("lf"), Side("go"), {"lf": runs(0.0), "go": runs(0.05)})
    assert text.startswith("## go − lf\n")
    heading, blank, caption, blank_too = text.splitlines()[:4]
    assert blank == blank_too == "" and text.endswith("|\n")
    assert caption.startswith("Paired per seed and α: the difference of each seed's run in")
    assert caption.endswith("over seeds (n pairs); * marks an interval that excludes 0.")
    (rows,) = markdown_tables(text)
    cells = {row[""]: (row["α=0.5"], row["α=1"]) for row in rows}
    assert list(cells) == [
        "worst-1 target damage",
        "worst-5 target damage",
        "worst-10 target damage",
        "mean target damage",
        "clean accuracy",
    ]
    assert cells["worst-1 target damage"] == ("0.050 ± 0.000 (n=3) *", "0.100 ± 0.000 (n=3) *")
    assert cells["worst-5 target damage"][1] == "0.100 ± 0.000 (n=3) * [mean of 3 < k]"
    assert cells["clean accuracy"] == ("0.000 ± 0.000 (n=3)",) * 2


# --- `subpop report`'s options: each bad one is one error naming the option, before anything
# is written (no report file or folder, no report run in the store) -----------------------


def refused(capsys, *argv: str) -> str:
    """The one ``error:`` line of a report refused at its options (exit code 2)."""
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    assert stop.value.code == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("error: ") and captured.out == ""
    return line


def nothing_written(tmp_path: Path, client: MlflowClient, before: set[Path]) -> None:
    assert set(tmp_path.rglob("*")) == before
    assert client.get_experiment_by_name("reports") is None


@pytest.fixture
def two_experiments(tmp_path, client, monkeypatch) -> set[Path]:
    """A store of two experiments with finished jobs and one without; the files there are."""
    for experiment in ("adult_a", "adult_b"):
        job(client, experiment, {"attack.alpha": "1", "seed": "0"}, 0.2)
    job(client, "crashed", {"attack.alpha": "1", "seed": "0"}, 0.2, status="FAILED")
    monkeypatch.chdir(tmp_path)
    return set(tmp_path.rglob("*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "missing/x/r.md"], "error: --out: the folder missing/x does not exist; create"),
        (["--out", "mlruns"], "error: --out: mlruns is a folder; name a file in it"),
        (["--notes", "none.md"], "error: --notes: cannot read none.md (No such file"),
        (["--paper", "none.yaml"], "error: --paper: cannot read none.yaml (No such file"),
        (["--paper", "mlruns/mlflow.db"], "error: --paper: cannot read mlruns/mlflow.db"),
        (["--compare", "adult_a"], "error: --compare: expected 2 arguments; see subpop report"),
        (
            ["--compare", "adult_a:seed", "adult_b"],
            "error: --compare: 'adult_a:seed' is not EXPERIMENT or EXPERIMENT:GROUP=OPTION",
        ),
        (["--bogus"], "error: --bogus: no such option; see subpop report --help"),
    ],
)
def test_a_bad_report_option_is_one_error_line_and_writes_nothing(
    tmp_path, client, two_experiments, capsys, args, message
):
    assert refused(capsys, *args).startswith(message)
    nothing_written(tmp_path, client, two_experiments)


def test_paper_numbers_lacking_what_the_tables_read_are_refused(
    tmp_path, client, two_experiments, capsys
):
    (tmp_path / "paper.yaml").write_text("adult_a: {table: T5, target_damage: {worst1: {}}}\n")
    line = refused(capsys, "--paper", "paper.yaml")
    assert line.startswith("error: --paper: paper.yaml: adult_a lacks table or target_damage")
    (tmp_path / "paper.yaml").unlink()
    nothing_written(tmp_path, client, two_experiments)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--tracking-dir", "elsewhere"],
            r"--tracking-dir: no MLflow store at sqlite:///.*elsewhere/mlflow.db; run an ",
        ),
        (["-e", "nope"], r"--experiment: no experiment 'nope' at .*; valid: adult_a, adult_b "),
        (["-e", "crashed"], r"--experiment: 'crashed' has no finished job runs at .*; valid: "),
        (["--compare", "adult_a", "adult_a"], "--compare: compares 'adult_a' with itself; name "),
        (["--compare", "adult_a", "nope"], r"--compare: no experiment 'nope' at .*; valid: "),
        (["--compare", "adult_a", "nope:model=mlp"], r"--compare: no experiment 'nope' at "),
        (
            ["--compare", "adult_a", "adult_a:model=mlp"],
            r"--compare: no runs of 'adult_a' chose model=mlp; valid options of model there: none",
        ),
        (
            ["--tracking-uri", "http://127.0.0.1:9"],
            r"--tracking-uri: cannot reach .*; start the server .* leave --tracking-uri out",
        ),
    ],
)
def test_a_store_or_experiment_that_is_not_there_names_its_option_and_writes_nothing(
    tmp_path, client, two_experiments, args, message
):
    with pytest.raises(ConfigError, match=message):
        main(args)
    nothing_written(tmp_path, client, two_experiments)


def test_only_the_default_reports_folder_is_made(tmp_path, client, two_experiments, capsys):
    refused(capsys, "--paper", "", "--out", "other/r.md")
    assert not (tmp_path / "other").exists()
    main(["--paper", ""])
    assert (tmp_path / "reports" / "report.md").is_file()
