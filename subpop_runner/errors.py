"""What ends a run early: bad input (`ConfigError`: the CLI prints its message alone and exits
2) and Ctrl-C (`INTERRUPTED`); and how the CLI prints that last line (`print_error`)."""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO


class ConfigError(ValueError):
    """Wrong config value, missing file or unreachable service; the message names the fix."""


# Set by the CLI's SIGINT handler: Lightning turns Ctrl-C during training into ``exit(1)``, so
# whoever closes a run reads this to tell an interruption (KILLED) from a failure.
INTERRUPTED = threading.Event()


class LineTracker:
    """A text stream that remembers whether its last write ended a line (``line_open``);
    everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.line_open = False

    def write(self, text: str) -> int:
        if text:
            self.line_open = not text.endswith("\n")
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def track_stderr() -> None:
    """Make ``sys.stderr`` a `LineTracker`; the CLI does this first, before any bar exists
    (tqdm and Lightning take ``sys.stderr`` when a bar is made)."""
    if not isinstance(sys.stderr, LineTracker):
        sys.stderr = LineTracker(sys.stderr)


def other_writers() -> None:
    """Other processes (a launcher's workers) may have written to stderr: the next line that
    must stand alone cannot trust the tracker and starts with a newline."""
    if isinstance(sys.stderr, LineTracker):
        sys.stderr.line_open = True


def print_alone(line: str, stream: TextIO | None = None) -> None:
    """Print ``line`` to stderr at the start of a line of its own. A progress bar ends with
    ``\\r`` and no newline (tqdm, Lightning), so after one the line would share the bar's and
    ``grep '^error:'`` on a log would miss it; a stream that is not a `LineTracker` cannot
    say, and is taken to be at a line start."""
    stream = sys.stderr if stream is None else stream
    newline = "\n" if getattr(stream, "line_open", False) else ""
    stream.write(f"{newline}{line}\n")
    stream.flush()


def print_error(message: str, stream: TextIO | None = None) -> None:
    """The CLI's one line for bad input: ``error: <key>: <problem>; <fix>``."""
    print_alone(f"error: {message}", stream)
