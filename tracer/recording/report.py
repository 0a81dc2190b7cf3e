"""`reqtrace report FILE [--json]`: where the time went, per stage, over a recording.

`build_report` makes the JSON of README "Recordings" (plus a few extra keys); `render_report` draws
it with rich for people. Percentiles use the nearest-rank method on the observed values:
no interpolation, so every number shown is a duration some request really had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracer.model.stages import LAYER_OF, STAGE_NAMES
from tracer.model.trace import RequestTrace
from tracer.recording.reader import Recording

SLOWEST = 10


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(durations_ns: list[int]) -> dict[str, Any]:
    """count, p50/p90/p99/max in µs of some durations (None when there are none)."""
    values = sorted(durations_ns)
    if not values:
        return {"count": 0, "p50_us": None, "p90_us": None, "p99_us": None, "max_us": None}
    return {
        "count": len(values),
        "p50_us": _us(percentile(values, 50)),
        "p90_us": _us(percentile(values, 90)),
        "p99_us": _us(percentile(values, 99)),
        "max_us": _us(values[-1]),
    }


def build_report(recording: Recording) -> dict[str, Any]:
    """The report JSON: requests, lost records, per-stage and total summaries, extras."""
    traces = recording.traces
    by_stage: dict[str, list[int]] = {}
    dominant: dict[str, int] = {}
    for trace in traces:
        for stage in trace.stages:
            by_stage.setdefault(stage.name, []).append(stage.duration_ns)
        top = trace.dominant_stage()
        if top is not None:
            dominant[top.name] = dominant.get(top.name, 0) + 1
    names = [name for name in STAGE_NAMES if name in by_stage]
    names += sorted(name for name in by_stage if name not in LAYER_OF)
    complete = sum(1 for trace in traces if trace.complete)
    return {
        "requests": len(traces),
        "lost_records": recording.lost_records,
        "stages": {name: summarize(by_stage[name]) for name in names},
        "total": summarize([trace.total_ns for trace in traces]),
        "complete": complete,
        "incomplete": len(traces) - complete,
        "lost_records_by_type": recording.lost_records_by_type,
        "dominant_stage_counts": dominant,
        "slowest": [_slow_entry(trace) for trace in _slowest(traces)],
        "cut_short": recording.footer is None,
        "problems": list(recording.problems),
    }


def _slowest(traces: list[RequestTrace]) -> list[RequestTrace]:
    return sorted(traces, key=lambda t: (-t.total_ns, t.id))[:SLOWEST]


def _slow_entry(trace: RequestTrace) -> dict[str, Any]:
    top = trace.dominant_stage()
    return {
        "id": trace.id,
        "method": trace.method,
        "path": trace.path,
        "status": trace.status,
        "total_us": _us(trace.total_ns),
        "dominant_stage": top.name if top else None,
        "dominant_us": _us(top.duration_ns) if top else None,
        "complete": trace.complete,
    }


def _us(ns: int) -> float:
    return round(ns / 1000, 1)


def format_us(us: float | None) -> str:
    """A duration for people: µs below a millisecond, then ms, then s."""
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.1f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1_000_000:.2f} s"


def render_report(report: dict[str, Any], console: Console) -> None:
    """Rich tables: the per-stage breakdown, the slowest requests, then what is missing."""
    table = Table(title=f"Where the time went: {report['requests']} requests", title_justify="left")
    for column in ("layer", "stage", "count", "p50", "p90", "p99", "max"):
        numeric = column not in ("layer", "stage")
        table.add_column(column, justify="right" if numeric else "left")
    for name, row in report["stages"].items():
        table.add_row(LAYER_OF.get(name, "?"), name, *_summary_cells(row))
    table.add_section()
    table.add_row("", "total", *_summary_cells(report["total"]), style="bold")
    console.print(table)

    if report["slowest"]:
        slow = Table(title="Slowest requests", title_justify="left")
        for column in ("id", "request", "status", "total", "dominant stage"):
            slow.add_column(column, justify="right" if column in ("id", "total") else "left")
        for entry in report["slowest"]:
            dominant = "-"
            if entry["dominant_stage"]:
                share = entry["dominant_us"] / entry["total_us"] if entry["total_us"] else 0
                dominant = f"{entry['dominant_stage']} ({format_us(entry['dominant_us'])}, "
                dominant += f"{share:.0%})"
            request = Text(f"{entry['method']} {entry['path']}")
            if not entry["complete"]:
                request.append(" (incomplete)", style="dim")
            status = str(entry["status"])
            slow.add_row(str(entry["id"]), request, status, format_us(entry["total_us"]), dominant)
        console.print(slow)

    lost = report["lost_records"]
    detail = ", ".join(f"{k} {v}" for k, v in report["lost_records_by_type"].items() if v)
    line = f"lost records: {lost}" + (f" ({detail})" if detail else "")
    console.print(Text(line, style="bold red" if lost else "green"))
    if report["incomplete"]:
        console.print(Text(f"incomplete requests: {report['incomplete']}", style="yellow"))
    for problem in report["problems"]:
        console.print(Text(f"warning: {problem}", style="yellow"))


def _summary_cells(row: dict[str, Any]) -> list[str]:
    keys = ("p50_us", "p90_us", "p99_us", "max_us")
    return [str(row["count"]), *(format_us(row[key]) for key in keys)]
