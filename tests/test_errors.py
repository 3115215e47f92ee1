"""The CLI's last line (`error:`, `interrupted:`) starts a line of its own, even after a
progress bar, so that ``grep '^error:'`` on a log finds it."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from tqdm import tqdm

from subpop_runner.errors import LineTracker, other_writers, print_error, track_stderr
from tests.test_cli import QUICK, command, runs


def grep_lines(text: str) -> list[str]:
    """Lines as grep sees them: split at newlines only (``\\r`` stays inside a line)."""
    return text.split("\n")


def test_an_error_after_a_progress_bar_starts_a_line_of_its_own():
    stream = LineTracker(io.StringIO())
    for _ in tqdm(range(3), file=stream, leave=False):  # ends with "\r", no newline
        pass
    print_error("attack.alpha: too many poison points; lower attack.alpha", stream)
    written = stream.getvalue()
    assert written.startswith("\r") and written.endswith("\n")
    assert grep_lines(written)[-2:] == [
        "error: attack.alpha: too many poison points; lower attack.alpha",
        "",
    ]


def test_an_error_after_whole_lines_adds_no_empty_line():
    stream = LineTracker(io.StringIO())
    print_error("seed: got -3; a seed is >= 0", stream)
    assert stream.getvalue() == "error: seed: got -3; a seed is >= 0\n"
    stream.write("a log line\n")
    print_error("seed: got -3; a seed is >= 0", stream)
    assert grep_lines(stream.getvalue())[1:] == [
        "a log line",
        "error: seed: got -3; a seed is >= 0",
        "",
    ]


def test_after_other_processes_wrote_the_error_starts_a_line(monkeypatch):
    """A launcher's workers share the terminal; what they wrote last is unknown here."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    track_stderr()
    track_stderr()  # once is enough: no tracker around a tracker
    stream = sys.stderr
    assert isinstance(stream, LineTracker) and not isinstance(stream.stream, LineTracker)
    stream.write("a log line\n")
    other_writers()
    print_error("selector.k: 1 of 3 jobs failed")
    assert stream.stream.getvalue() == "a log line\n\nerror: selector.k: 1 of 3 jobs failed\n"


@pytest.mark.slow
def test_the_cli_error_after_training_bars_is_a_line_of_its_own(tmp_path):
    """The memory refusal comes after the clean victim's and the surrogate's bars."""
    mlruns = tmp_path / "mlruns"
    args = command(*QUICK, "attack.alpha=1e9", f"tracking.dir={mlruns}")
    # Bytes: text mode would turn the bars' "\r" into newlines and hide the problem.
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, timeout=600)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr[-3000:]
    assert "victim/s]\r" in stderr  # a bar was drawn
    (line,) = [line for line in grep_lines(stderr) if "error:" in line]
    assert line.startswith("error: attack.alpha: one subpopulation's ")
    (run,) = runs(mlruns, "smoke_adult")
    assert run.info.status == "FAILED"  # bad input seen inside the run: the run says why
