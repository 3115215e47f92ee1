"""Options of the commands outside Hydra (`subpop report`, `figure2`, `theorem71`): an
`ArgumentParser` whose errors are the CLI's one ``error:`` line, and the checks of option values
they share (argparse ``type=`` functions: each raises `argparse.ArgumentTypeError` with
``<problem>; <fix>``, which argparse hands to `ArgumentParser.error` with the option's name)."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from subpop_runner.errors import print_error


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one ``error: <option>: <problem>; <fix>`` line and exit code
    2, without argparse's usage block, as for every other bad input."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument "):  # "argument --n: got -5; valid: ..."
            option, _, problem = message.removeprefix("argument ").partition(": ")
        elif message.startswith("unrecognized arguments: "):
            option, problem = message.removeprefix("unrecognized arguments: "), "no such option"
        else:
            option, problem = self.prog, message
        if "; " not in problem:  # argparse's own problems come without a fix
            problem += f"; see {self.prog} --help"
        print_error(f"{option}: {problem}")
        raise SystemExit(2)


def integer(low: int) -> Callable[[str], int]:
    """An integer option's check: at least ``low``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"got {text}; valid: an integer >= {low}")
        return value

    return check


def number_in(low: float, high: float) -> Callable[[str], float]:
    """A number option's check: in [low, high)."""

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not low <= value < high:  # NaN fails both comparisons
            raise argparse.ArgumentTypeError(f"got {text}; valid: a number in [{low:g}, {high:g})")
        return value

    return check


def output_file(text: str) -> Path:
    """A file to write, in a folder that exists and takes files: no folder is ever created
    (a typo would leave a tree of them, even at the filesystem's root)."""
    path = Path(text).expanduser()
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; name a file in it")
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise argparse.ArgumentTypeError(
            f"the folder {folder} {problem}; create it first (mkdir -p {folder}), or name a "
            "file in a folder that exists"
        )
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(
            f"cannot write in the folder {folder} ({error.strerror or error}); choose a folder "
            "you can write to"
        ) from None
    return path


def file_text(text: str) -> str:
    """A text file option's check: the file's text."""
    try:
        return Path(text).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise argparse.ArgumentTypeError(
            f"cannot read {text} ({reason}); name a UTF-8 text file"
        ) from None
