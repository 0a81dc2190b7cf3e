"""`reqtrace report FILE [--json]`: where the time went, per stage, over a recording.

`build_report` makes the JSON of README "Recordings" (plus a few extra keys); `render_report` draws
it with rich for people. Percentiles use the nearest-rank method on the observed values:
no interpolation, so every number shown is a duration some request really had.
"""

from __future__ import annotations

import fnmatch
import math
import re
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


GROUPINGS = ("path", "route", "status")
_ID_SEGMENT = re.compile(r"^(\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{36})$")


def route_of(path: str) -> str:
    """The path with id-like segments (numbers, long hex, UUIDs) as {id}: /users/42 and
    /users/43 are one route. The bundled server does not know the app's routing table."""
    return "/".join("{id}" if _ID_SEGMENT.match(part) else part for part in path.split("/"))


def group_key(trace: RequestTrace, by: str) -> str:
    if by == "path":
        return trace.path
    if by == "route":
        return route_of(trace.path)
    if by == "status":
        return str(trace.status)
    raise ValueError(f"cannot group by {by!r} (choose {', '.join(GROUPINGS)})")


def select(
    traces: list[RequestTrace], path: str | None = None, slower_than_ms: float | None = None
) -> list[RequestTrace]:
    """The traces whose path matches the glob `path` and whose total exceeds the threshold."""
    out = traces
    if path is not None:
        out = [t for t in out if fnmatch.fnmatchcase(t.path, path)]
    if slower_than_ms is not None:
        threshold = slower_than_ms * 1_000_000
        out = [t for t in out if t.total_ns > threshold]
    return out


def stage_summaries(traces: list[RequestTrace]) -> tuple[dict[str, Any], dict[str, int]]:
    """Per-stage summaries in canonical order, and how often each stage dominated."""
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
    return {name: summarize(by_stage[name]) for name in names}, dominant


def loop_holders(traces: list[RequestTrace]) -> list[dict[str, Any]]:
    """Who held the event loop while requests waited for it, summed over the recording:
    one row per holder route ("other work" for what no request accounts for)."""
    rows: dict[str, dict[str, Any]] = {}
    for trace in traces:
        for entry in trace.blame:
            key = f"{entry.method} {route_of(entry.path)}" if entry.holder else "other work"
            row = rows.setdefault(key, {"holder": key, "waits": 0, "held_us": 0.0, "max_us": 0.0})
            row["waits"] += 1
            row["held_us"] = round(row["held_us"] + entry.ns / 1000, 1)
            row["max_us"] = max(row["max_us"], _us(entry.ns))
    return sorted(rows.values(), key=lambda row: -row["held_us"])


def coverage(traces: list[RequestTrace]) -> dict[str, Any]:
    """How much of the requests' time no probe or hook saw (`unobserved` stages)."""
    shares = sorted(
        sum(s.duration_ns for s in t.stages if s.name == "unobserved") / t.total_ns
        for t in traces
        if t.total_ns > 0
    )
    if not shares:
        return {"requests": 0, "unobserved_p50_pct": None, "unobserved_max_pct": None}
    return {
        "requests": len(shares),
        "unobserved_p50_pct": round(100 * shares[len(shares) // 2], 2),
        "unobserved_p99_pct": round(100 * shares[min(len(shares) - 1, len(shares) * 99 // 100)], 2),
        "unobserved_max_pct": round(100 * shares[-1], 2),
        "over_1_pct": sum(1 for share in shares if share > 0.01),
    }


def build_report(
    recording: Recording,
    by: str | None = None,
    path: str | None = None,
    slower_than_ms: float | None = None,
) -> dict[str, Any]:
    """The report JSON: requests, lost records, per-stage and total summaries, extras;
    with `by`, the same per group (path, route or status); filtered by path glob and
    total duration."""
    traces = select(recording.traces, path, slower_than_ms)
    stages, dominant = stage_summaries(traces)
    complete = sum(1 for trace in traces if trace.complete)
    report: dict[str, Any] = {
        "requests": len(traces),
        "lost_records": recording.lost_records,
        "stages": stages,
        "total": summarize([trace.total_ns for trace in traces]),
        "complete": complete,
        "incomplete": len(traces) - complete,
        "lost_records_by_type": recording.lost_records_by_type,
        "dominant_stage_counts": dominant,
        "slowest": [_slow_entry(trace) for trace in _slowest(traces)],
        "loop_holders": loop_holders(traces),
        "coverage": coverage(traces),
        "filters": {"path": path, "slower_than_ms": slower_than_ms, "by": by},
        "recorded_requests": len(recording.traces),
        "cut_short": recording.footer is None,
        "problems": list(recording.problems),
    }
    if by is not None:
        groups: dict[str, list[RequestTrace]] = {}
        for trace in traces:
            groups.setdefault(group_key(trace, by), []).append(trace)
        report["groups"] = {
            key: {
                "requests": len(members),
                "stages": stage_summaries(members)[0],
                "total": summarize([trace.total_ns for trace in members]),
            }
            for key, members in sorted(groups.items(), key=lambda item: -len(item[1]))
        }
    return report


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
    """Rich tables: the per-stage breakdown (per group with --by), the slowest requests, who
    held the event loop, then what is missing."""
    filters = report.get("filters") or {}
    shown = [f"{k} {v}" for k, v in filters.items() if v is not None and k != "by"]
    scope = f" (of {report['recorded_requests']}; {', '.join(shown)})" if shown else ""
    title = f"Where the time went: {_count(report['requests'], 'request')}{scope}"
    console.print(_stage_table(title, report["stages"], report["total"]))
    for key, group in (report.get("groups") or {}).items():
        title = f"{filters.get('by')} {key}: {_count(group['requests'], 'request')}"
        console.print(_stage_table(title, group["stages"], group["total"]))

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

    if report.get("loop_holders"):
        holders = Table(title="Who held the event loop while requests waited", title_justify="left")
        for column in ("holder", "waits", "held in all", "longest"):
            holders.add_column(column, justify="left" if column == "holder" else "right")
        for row in report["loop_holders"][:10]:
            holders.add_row(
                row["holder"],
                str(row["waits"]),
                format_us(row["held_us"]),
                format_us(row["max_us"]),
            )
        console.print(holders)
    cover = report.get("coverage") or {}
    if cover.get("requests"):
        console.print(
            f"unobserved share of a request's total: p50 {cover['unobserved_p50_pct']}%, "
            f"max {cover['unobserved_max_pct']}%"
            f" ({_count(cover['over_1_pct'], 'request')} over 1%)"
        )

    lost = report["lost_records"]
    detail = ", ".join(f"{k} {v}" for k, v in report["lost_records_by_type"].items() if v)
    line = f"lost records: {lost}" + (f" ({detail})" if detail else "")
    console.print(Text(line, style="bold red" if lost else "green"))
    if report["incomplete"]:
        console.print(Text(f"incomplete requests: {report['incomplete']}", style="yellow"))
    for problem in report["problems"]:
        console.print(Text(f"warning: {problem}", style="yellow"))


def _stage_table(title: str, stages: dict[str, Any], total: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("layer", "stage", "count", "p50", "p90", "p99", "max"):
        numeric = column not in ("layer", "stage")
        table.add_column(column, justify="right" if numeric else "left")
    for name, row in stages.items():
        table.add_row(LAYER_OF.get(name, "?"), name, *_summary_cells(row))
    table.add_section()
    table.add_row("", "total", *_summary_cells(total), style="bold")
    return table


def _summary_cells(row: dict[str, Any]) -> list[str]:
    keys = ("p50_us", "p90_us", "p99_us", "max_us")
    return [str(row["count"]), *(format_us(row[key]) for key in keys)]


def _count(count: int, noun: str) -> str:
    """'1 request', '2 requests'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
