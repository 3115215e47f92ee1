"""The page a benchmark writes under docs/: when, on what machine and data, then its sections."""

from __future__ import annotations

import os
from pathlib import Path

from subpop_runner.report import machine


def write_page(
    title: str, script: str, started: str, data: str, sections: dict[str, list[str]], out: str
) -> None:
    """Write (and print) ``# title``, the measurement line and one ``##`` part per section."""
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        f"# {title}",
        "",
        f"Measured by `make bench` (`{script}`) on {started}. Machine: {machine()}. Data: {data}. "
        f"Load averages at the end (1/5/15 min): {load}, on {os.cpu_count()} cores.",
        "",
    ]
    for heading, body in sections.items():
        lines += [f"## {heading}", "", *body, ""]
    Path(out).write_text("\n".join(lines))
    print("\n".join(lines))
