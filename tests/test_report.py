import pandas as pd

from subpop_runner.report import group_columns, paper_table, reference_table, side_table


def runs_frame() -> pd.DataFrame:
    rows = []
    for k in ("50", "100"):
        for alpha, seed, damage in (("0.5", "0", 0.1), ("0.5", "1", 0.3), ("2.0", "0", 0.5)):
            rows.append(
                {
                    "params.attack.alpha": alpha,
                    "params.seed": seed,
                    "params.selector.k": k,
                    "params.tracking.dir": f"/tmp/{seed}",
                    "params.dataset.max_rows": "None",
                    "metrics.target_damage/worst1": damage,
                    "metrics.target_damage/worst5": damage / 2,
                    "metrics.target_damage/worst10": damage / 4,
                    "metrics.subpop_size_aux/worst1": 40.0,
                    "metrics.subpop_size_aux/worst5": 50.0,
                    "metrics.subpop_size_aux/worst10": 60.0,
                    "metrics.clean_accuracy": 0.85,
                    "metrics.collateral_damage/worst5": 0.01,
                    "metrics.subpops/attacked": 10.0,
                    "metrics.subpops/no_test_points": 0.0,
                    "start_time": pd.Timestamp("2026-01-01 00:00"),
                    "end_time": pd.Timestamp("2026-01-01 00:01"),
                }
            )
    return pd.DataFrame(rows)


def test_groups_by_what_differs_except_alpha_seed_and_tracking():
    assert group_columns(runs_frame()) == ["params.selector.k"]


def test_paper_table_has_worst_rows_and_alpha_columns_averaging_seeds():
    table = paper_table(runs_frame()[lambda r: r["params.selector.k"] == "50"])
    assert list(table.columns) == ["worst", "α=0.5", "α=2", "mean aux size"]
    assert list(table["worst"]) == [1, 5, 10]
    assert table.loc[0, "α=0.5"] == "0.200 ± 0.141"  # mean and sd over seeds 0 and 1
    assert table.loc[0, "α=2"] == "0.500"
    assert table.loc[2, "mean aux size"] == 60.0


def test_side_table_reports_runs_and_wall_time():
    side = side_table(runs_frame()[lambda r: r["params.selector.k"] == "100"])
    assert list(side["runs"]) == [2, 1]
    assert list(side["wall time / run (s)"]) == ["60", "60"]


def test_reference_table_lays_out_the_papers_numbers():
    paper = {
        "target_damage": {f"worst{k}": {0.5: 0.1 * k, 2.0: 0.2 * k} for k in (1, 5, 10)},
        "size": {"worst1": 48.3, "worst5": 45.1, "worst10": 41.1},
    }
    table = reference_table(paper)
    assert table.loc[1, "α=2"] == "1.000" and table.loc[2, "size"] == 41.1
