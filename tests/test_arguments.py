"""`subpop figure2` and `subpop theorem71` check every option before any work: a bad one is one
``error: <option>: <problem>; <fix>`` line, exit code 2, no usage block and nothing written.
(`subpop report`'s options: tests/test_report.py; the real CLI: tests/test_cli.py.)"""

from __future__ import annotations

import pytest

from subpop_runner.defenses.impossibility import main_figure2, main_theorem71


def refused(capsys, main, *argv: str) -> str:
    """The one line a command printed refusing ``argv`` (exit code 2, nothing on stdout)."""
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    assert stop.value.code == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("error: ") and captured.out == ""
    return line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--out", "missing/x/fig.png"],
            "error: --out: the folder missing/x does not exist; create it first (mkdir -p ",
        ),
        (["--out", "fig"], "error: --out: fig is not a .png, .pdf or .svg file; name one"),
        (["--out", "made.png"], "error: --out: made.png is a folder; name a file in it"),
        (["--seed", "-1"], "error: --seed: got -1; valid: an integer >= 0"),
        (["--seed", "one"], "error: --seed: got one; valid: an integer >= 0"),
        (["--seed"], "error: --seed: expected one argument; see subpop figure2 --help"),
        (["--bogus"], "error: --bogus: no such option; see subpop figure2 --help"),
    ],
)
def test_figure2_refuses_a_bad_option_and_writes_nothing(
    tmp_path, monkeypatch, capsys, args, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "made.png").mkdir()
    assert refused(capsys, main_figure2, *args).startswith(message)
    assert [p.name for p in tmp_path.rglob("*")] == ["made.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "-5"], "--n: got -5; valid: an integer >= 1"),
        (["--n", "0"], "--n: got 0; valid: an integer >= 1"),
        (["--k", "1"], "--k: got 1; valid: an integer >= 2"),
        (["--n", "10", "--k", "20"], "--k: got 20 for --n 10; valid: an integer from 2 to n"),
        (["--noise", "0.5"], "--noise: got 0.5; valid: a number in [0, 0.5)"),
        (["--noise", "-0.1"], "--noise: got -0.1; valid: a number in [0, 0.5)"),
        (["--noise", "nan"], "--noise: got nan; valid: a number in [0, 0.5)"),
        (["--neighbours", "0"], "--neighbours: got 0; valid: an integer >= 1"),
        (["--n", "20", "--neighbours", "30"], "--neighbours: got 30 for --n 20; valid: an"),
        (["--seed", "-1"], "--seed: got -1; valid: an integer >= 0"),
        # As many subpopulations as points: the smallest has none, nothing to attack.
        (
            ["--n", "10", "--k", "10", "--neighbours", "3"],
            "--k: with --n 10 and --seed 0, the smallest of the 10 subpopulations drew no "
            "training point, so there is no attack to measure; lower --k or raise --n",
        ),
    ],
)
def test_theorem71_refuses_a_bad_option(capsys, args, message):
    assert refused(capsys, main_theorem71, *args).startswith(f"error: {message}")
