"""The one table `scripts/bench` prints: machine facts, rows of side-by-side numbers, notes.

Pure formatting (no measuring), so tests/test_bench_smoke.py can check it. The same rows go
to the terminal as a Markdown table (pasteable into the README) and to `--json FILE`, from
which the README figures can be regenerated.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "reqtrace.bench/1"


@dataclass
class Row:
    """One line of the table. Text cells are what is shown; `values` keeps the numbers."""

    what: str
    reqtrace: str
    baseline: str = "—"
    ratio: str = "—"
    note: str = ""  # what the numbers mean, printed under the table
    values: dict[str, Any] = field(default_factory=dict)


def machine_facts(argv: Sequence[str]) -> dict[str, Any]:
    """Date, kernel, CPU model, core count, Python version and the exact command line."""
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": f"{platform.system()} {platform.release()}",
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "wrk": wrk_version(),
        "command": shlex.join(argv),
    }


def cpu_model(cpuinfo: str | None = None) -> str:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return " ".join(match.group(1).split()) if match else (platform.processor() or "unknown")


def wrk_version() -> str:
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    match = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return match.group(1) if match else "unknown"


# -- cells -------------------------------------------------------------------------------


def number(value: float | None, digits: int = 0, unit: str = "") -> str:
    """12345.6 -> "12,346"; None -> "—" (not measured)."""
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{unit}"


def median_best(median: float | None, best: float | None, digits: int = 0, unit: str = "") -> str:
    """ "12,300 (best 12,800)"; the best is left out when it equals the median."""
    if median is None:
        return "—"
    shown = number(median, digits, unit)
    if best is not None and number(best, digits) != number(median, digits):
        shown += f" (best {number(best, digits, unit)})"
    return shown


def ratio(numerator: float | None, denominator: float | None, digits: int = 2) -> str:
    if numerator is None or not denominator:
        return "—"
    return f"{numerator / denominator:.{digits}f}x"


# -- rendering ---------------------------------------------------------------------------


def render(facts: dict[str, Any], setup: Sequence[str], rows: Sequence[Row]) -> str:
    """The Markdown block: facts, setup lines, the table, then one note per row that has one."""
    lines = [
        f"reqtrace benchmark, {facts['date']}: {facts['kernel']}, {facts['cpu']}, "
        f"{facts['cores']} cores, {facts['python']}, wrk {facts['wrk']}",
        "",
        f"    {facts['command']}",
        "",
    ]
    lines += [f"- {line}" for line in setup]
    lines.append("")
    header = ("what", "reqtrace", "baseline", "ratio")
    cells = [[row.what, row.reqtrace, row.baseline, row.ratio] for row in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        padded = (
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    lines.append(line(header))
    lines.append(
        "|"
        + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths))
        + "|"
    )
    lines += [line(c) for c in cells]
    notes = [(row.what, row.note) for row in rows if row.note]
    if notes:
        lines += ["", "What the numbers mean:"]
        lines += [f"- {what}: {note}" for what, note in notes]
    return "\n".join(lines)


def as_json(
    facts: dict[str, Any],
    setup: Sequence[str],
    rows: Sequence[Row],
    runs: dict[str, Any],
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "facts": facts,
        "setup": list(setup),
        "rows": [asdict(row) for row in rows],
        "runs": runs,
    }
