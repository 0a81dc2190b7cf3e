"""`reqtrace report FILE --html -o report.html`: one self-contained page to attach to a ticket.

The page is the report of tracer/recording/report.py drawn for people who were not at the
terminal: per-stage latency histograms (log-scale, binned) with p50/p90/p99, the same per
route, a waterfall of each of the slowest requests, who held the event loop, what was lost
or not observed, and the recording's header (host, kernel, probe plan) so the reader knows
what produced the numbers.

Self-contained on purpose: inline CSS and SVG (tracer/recording/svg.py), no scripts, no
fonts or images from anywhere, so it opens the same from a mail attachment, an air-gapped
laptop or a ticket system that strips JavaScript. Its size does not grow with the number of
requests: histograms are binned and only the slowest N requests get a waterfall.
"""

from __future__ import annotations

import datetime
import heapq
import json
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tracer import __version__
from tracer.model.stages import LAYER_OF, LAYERS, STAGE_SPANS
from tracer.model.trace import RequestTrace
from tracer.model.units import format_duration
from tracer.recording.reader import Recording
from tracer.recording.report import SLOWEST, build_report, format_us, select
from tracer.recording.svg import (
    Bar,
    LogAxis,
    attr,
    axis_for,
    axis_svg,
    histogram,
    histogram_svg,
    layer_color,
    share_bar_svg,
    waterfall_svg,
)

MAX_GROUPS = 25  # routes (or paths, statuses) shown; the rest are counted
MAX_HOLDERS = 20
MARKERS = (("p50", "p50_us"), ("p90", "p90_us"), ("p99", "p99_us"))
TOTAL = "total"

# Header keys shown in the page's subtitle, in this order, when the header has them; every
# other key is listed in the "Recording" section (a future "mode" or "server" key included).
HEADLINE_KEYS = ("host", "kernel", "mode", "server", "app", "address")
HIDDEN_HEADER_KEYS = frozenset({"type", "schema", "probe_plan", "coverage"})

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 24px auto; max-width: 1180px;
       padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px;
  border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 4px; }
.sub { color: #666; margin: 0 0 12px; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { padding: 2px 8px; text-align: left; vertical-align: middle; }
th { border-bottom: 1px solid #bbb; font-weight: 600; }
tr.total td { border-top: 1px solid #bbb; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.hist { padding: 0 8px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; min-width: 120px; }
.card b { display: block; font-size: 18px; }
.card.bad { border-color: #d33; background: #fff4f4; }
.card.ok { border-color: #9c9; }
.swatch { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px;
          border-radius: 2px; }
.muted { color: #777; } .warn { color: #b35c00; } .bad { color: #c22; }
.request { margin: 14px 0 20px; }
.request p { margin: 2px 0; }
details > summary { cursor: pointer; color: #335; }
code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; }
ul.notes { margin: 4px 0; color: #555; }
@media print { details { display: block; } }
"""


def build_html(
    recording: Recording,
    *,
    by: str | None = None,
    path: str | None = None,
    slower_than_ms: float | None = None,
    waterfalls: int = SLOWEST,
) -> str:
    """The whole page for a recording (optionally filtered like `reqtrace report`)."""
    by = by or "route"
    report = build_report(recording, by, path, slower_than_ms)
    traces = select(recording.traces, path, slower_than_ms)
    durations = stage_durations(traces)
    name = os.path.basename(recording.path) or "recording"
    body = [
        _title(recording, report, name),
        _summary(report),
        _stages(report, durations),
        _groups(report, by),
        _slowest(traces, waterfalls),
        _holders(report),
        _losses(recording, report),
        _recording(recording),
        f'<p class="muted">Made by reqtrace {attr(__version__)} from <code>{attr(name)}</code>'
        f" at {_utc(datetime.datetime.now(datetime.UTC))}. Percentiles are nearest-rank:"
        " every number shown is a duration some request really had.</p>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>reqtrace report: {attr(name)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body></html>\n"
    )


def stage_durations(traces: Iterable[RequestTrace]) -> dict[str, list[int]]:
    """Every stage's durations (ns), and the requests' totals under "total"."""
    out: dict[str, list[int]] = {TOTAL: []}
    totals = out[TOTAL]
    for trace in traces:
        totals.append(trace.end_ns - trace.start_ns)
        for stage in trace.stages:
            values = out.get(stage.name)
            if values is None:
                values = out[stage.name] = []
            values.append(stage.end_ns - stage.start_ns)
    return out


def shared_axis(durations: Mapping[str, Sequence[int]]) -> LogAxis:
    """One log axis for every histogram of the page, so their positions compare."""
    positive = [v for values in durations.values() for v in (min(values), max(values)) if v > 0]
    if not positive:
        return axis_for(1_000, 1_000_000)
    return axis_for(min(positive), max(positive))


# -- sections -------------------------------------------------------------------------------


def _title(recording: Recording, report: dict[str, Any], name: str) -> str:
    header = recording.header or {}
    facts = [f"{key} {_scalar(header[key])}" for key in HEADLINE_KEYS if key in header]
    started = header.get("started_unix_ns")
    if isinstance(started, int):
        facts.append("started " + _utc_ns(started))
    filters = report.get("filters") or {}
    shown = [f"{k} {v}" for k, v in filters.items() if v is not None and k != "by"]
    scope = f" — {report['requests']:,} of {report['recorded_requests']:,} requests"
    scope += f" ({', '.join(shown)})"
    return (
        f"<h1>Where the time went: <code>{attr(name)}</code></h1>\n"
        f'<p class="sub">{attr(" · ".join(facts) or "no header: host and kernel unknown")}'
        f"{attr(scope) if shown else ''}</p>"
    )


def _summary(report: dict[str, Any]) -> str:
    total = report["total"]
    cover = report.get("coverage") or {}
    lost = report["lost_records"]
    cards = [
        _card("requests", f"{report['requests']:,}"),
        _card("complete", f"{report['complete']:,}", "ok" if not report["incomplete"] else ""),
        _card("incomplete", f"{report['incomplete']:,}", "bad" if report["incomplete"] else "ok"),
        _card("p50 total", format_us(total["p50_us"])),
        _card("p90 total", format_us(total["p90_us"])),
        _card("p99 total", format_us(total["p99_us"])),
        _card("max total", format_us(total["max_us"])),
        _card("lost records", f"{lost:,}", "bad" if lost else "ok"),
    ]
    if cover.get("requests"):
        cards.append(
            _card(
                "unobserved (p50 / max)",
                f"{cover['unobserved_p50_pct']}% / {cover['unobserved_max_pct']}%",
                "bad" if cover.get("unobserved_max_pct", 0) > 10 else "",
            )
        )
    legend = "".join(
        f'<span class="swatch" style="background:{layer_color(layer)}"></span>{attr(layer)}'
        for layer in LAYERS
    )
    return (
        f'<section id="summary"><div class="cards">{"".join(cards)}</div>'
        f'<p class="muted">layers:{legend}</p></section>'
    )


def _card(label: str, value: str, tone: str = "") -> str:
    return f'<div class="card {tone}">{attr(label)}<b>{attr(value)}</b></div>'


def _stages(report: dict[str, Any], durations: Mapping[str, Sequence[int]]) -> str:
    """The per-stage table, each row with its histogram on the page's shared axis."""
    if not report["requests"]:
        return '<section id="stages"><h2>Stages</h2><p>No requests to show.</p></section>'
    axis = shared_axis(durations)
    rows = []
    for name, row in report["stages"].items():
        rows.append(_stage_row(name, LAYER_OF.get(name, "?"), row, durations.get(name, ()), axis))
    rows.append(_stage_row(TOTAL, "", report["total"], durations[TOTAL], axis, total=True))
    head = (
        "<tr><th>layer</th><th>stage</th><th class=n>count</th><th class=n>p50</th>"
        "<th class=n>p90</th><th class=n>p99</th><th class=n>max</th>"
        f"<th>{axis_svg(axis)}</th></tr>"
    )
    return (
        '<section id="stages"><h2>Stages: latency per stage</h2>'
        f'<p class="muted">Histograms share one log-scale time axis ({axis.per_decade} bins a '
        "decade; bar height: requests in the bin, scaled per stage); dashed lines mark p50, p90 "
        "and p99. Hover a bar for its range and count.</p>"
        f"<table>{head}{''.join(rows)}</table></section>"
    )


def _stage_row(
    name: str,
    layer: str,
    row: Mapping[str, Any],
    values: Sequence[int],
    axis: LogAxis,
    total: bool = False,
) -> str:
    markers = [(label, row[key] * 1000) for label, key in MARKERS if row.get(key) is not None]
    color = layer_color(layer) if layer else "#444"
    picture = histogram_svg(
        histogram(values, axis), axis, color=color, markers=markers, label=name, ticks=False
    )
    span = STAGE_SPANS.get(name, "request total: first kernel timestamp → last send exit")
    return (
        f'<tr class="{"total" if total else "stage"}" data-stage="{attr(name)}">'
        f'<td>{attr(layer)}</td><td title="{attr(span)}">{attr(name)}</td>'
        + _summary_cells(row)
        + f'<td class="hist">{picture}</td></tr>'
    )


def _summary_cells(row: Mapping[str, Any]) -> str:
    cells = [f'<td class="n">{row["count"]:,}</td>']
    for key in ("p50_us", "p90_us", "p99_us", "max_us"):
        cells.append(f'<td class="n">{attr(format_us(row.get(key)))}</td>')
    return "".join(cells)


def _groups(report: dict[str, Any], by: str) -> str:
    groups: dict[str, Any] = report.get("groups") or {}
    if not groups:
        return ""
    rows, details = [], []
    for key, group in list(groups.items())[:MAX_GROUPS]:
        total = group["total"]
        top = max(group["stages"].items(), key=lambda item: item[1]["p50_us"] or 0, default=None)
        rows.append(
            f"<tr><td><code>{attr(key)}</code></td><td class=n>{group['requests']:,}</td>"
            + "".join(
                f'<td class="n">{attr(format_us(total[k]))}</td>'
                for k in ("p50_us", "p90_us", "p99_us", "max_us")
            )
            + f"<td>{attr(top[0]) if top else '-'}</td></tr>"
        )
        stage_rows = "".join(
            f"<tr><td>{attr(LAYER_OF.get(name, '?'))}</td><td>{attr(name)}</td>"
            + _summary_cells(row)
            + "</tr>"
            for name, row in group["stages"].items()
        )
        details.append(
            f'<details class="group"><summary><code>{attr(key)}</code>: '
            f"{group['requests']:,} requests, p50 {attr(format_us(total['p50_us']))}, "
            f"p99 {attr(format_us(total['p99_us']))}</summary><table>"
            "<tr><th>layer</th><th>stage</th><th class=n>count</th><th class=n>p50</th>"
            "<th class=n>p90</th><th class=n>p99</th><th class=n>max</th></tr>"
            f'{stage_rows}<tr class="total"><td></td><td>total</td>'
            f"{_summary_cells(total)}</tr></table></details>"
        )
    more = len(groups) - MAX_GROUPS
    rest = f'<p class="muted">{more:,} more not shown.</p>' if more > 0 else ""
    return (
        f'<section id="groups"><h2>Per {attr(by)}</h2>'
        "<table><tr><th>" + attr(by) + "</th><th class=n>requests</th><th class=n>p50</th>"
        "<th class=n>p90</th><th class=n>p99</th><th class=n>max</th>"
        "<th>largest stage (p50)</th></tr>"
        f"{''.join(rows)}</table>{rest}"
        '<p class="muted">Per-stage percentiles of each (click to open):</p>'
        f"{''.join(details)}</section>"
    )


def slowest_traces(traces: Iterable[RequestTrace], n: int) -> list[RequestTrace]:
    """The n slowest requests, slowest first (ties: lower id first)."""
    return heapq.nsmallest(n, traces, key=lambda t: (t.start_ns - t.end_ns, t.id))


def bars_of(trace: RequestTrace) -> list[Bar]:
    """A trace's stages as waterfall rows, with who held the loop and why gaps are empty."""
    gap_reasons = [n.split(": ", 2)[-1] for n in trace.notes if n.startswith("unobserved:")]
    bars = []
    for stage in trace.stages:
        note = ""
        if stage.name == "unobserved" and gap_reasons:
            note = gap_reasons.pop(0)
        blame = trace.blame_of(stage.name)
        if blame:
            note = "loop held by " + "; ".join(
                f"{b.method} {b.path} (request {b.holder}) {format_duration(b.ns)}"
                if b.holder
                else f"other work {format_duration(b.ns)}"
                for b in blame
            )
        bars.append(Bar(stage.name, stage.layer, stage.start_ns, stage.end_ns, note))
    return bars


def _slowest(traces: Sequence[RequestTrace], n: int) -> str:
    chosen = slowest_traces(traces, n)
    if not chosen:
        return ""
    parts = [
        f'<section id="slowest"><h2>The {len(chosen)} slowest requests</h2>'
        '<p class="muted">One waterfall each, from the first kernel timestamp to the last send '
        "exit, on its own linear time axis. Hover a bar for details.</p>"
    ]
    for trace in chosen:
        bars = bars_of(trace)
        top = trace.dominant_stage()
        dominant = (
            f"; largest stage {top.name} {format_duration(top.duration_ns)} "
            f"({top.duration_ns / trace.total_ns:.0%})"
            if top and trace.total_ns
            else ""
        )
        target = trace.path + (f"?{trace.query}" if trace.query else "")
        state = "" if trace.complete else ' <span class="warn">(incomplete)</span>'
        parts.append(
            f'<div class="request" id="request-{trace.id}" data-id="{trace.id}">'
            f"<h3>#{trace.id} {attr(trace.method)} <code>{attr(target)}</code> → "
            f"{trace.status}: {attr(format_duration(trace.total_ns))}{state}</h3>"
            f'<p class="muted">client {attr(trace.client[0])}:{trace.client[1]} · request '
            f"{trace.seq} on connection {trace.conn_id}{attr(dominant)} "
            f"{share_bar_svg(bars, trace.start_ns, trace.end_ns)}</p>"
            + waterfall_svg(
                bars,
                trace.start_ns,
                trace.end_ns,
                title=f"request {trace.id}: {trace.method} {target}",
            )
        )
        for entry in trace.blame:
            who = (
                f"{entry.method} {entry.path} (request {entry.holder})"
                if entry.holder
                else "other work (no single traced request accounts for it)"
            )
            parts.append(
                f"<p>{attr(entry.stage)}: the event loop was held by {attr(who)} for "
                f"{attr(format_duration(entry.ns))}</p>"
            )
        if trace.notes:
            notes = "".join(f"<li>{attr(note)}</li>" for note in trace.notes)
            parts.append(
                f"<details><summary>{len(trace.notes)} note(s)</summary>"
                f'<ul class="notes">{notes}</ul></details>'
            )
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _holders(report: dict[str, Any]) -> str:
    holders = report.get("loop_holders") or []
    if not holders:
        return (
            '<section id="holders"><h2>Who held the event loop</h2>'
            "<p>No request waited for the event loop behind other work.</p></section>"
        )
    rows = "".join(
        f"<tr><td><code>{attr(row['holder'])}</code></td><td class=n>{row['waits']:,}</td>"
        f'<td class="n">{attr(format_us(row["held_us"]))}</td>'
        f'<td class="n">{attr(format_us(row["max_us"]))}</td></tr>'
        for row in holders[:MAX_HOLDERS]
    )
    return (
        '<section id="holders"><h2>Who held the event loop while requests waited</h2>'
        '<p class="muted">Summed over the loop-wait stages (loop_busy, loop_queue, handoff) of '
        'every request; "other work" is what no single traced request accounts for.</p>'
        "<table><tr><th>holder</th><th class=n>waits</th><th class=n>held in all</th>"
        f"<th class=n>longest</th></tr>{rows}</table></section>"
    )


def _losses(recording: Recording, report: dict[str, Any]) -> str:
    lost = report["lost_records"]
    by_type = ", ".join(f"{k} {v:,}" for k, v in report["lost_records_by_type"].items() if v)
    items = [
        f'<li class="{"bad" if lost else ""}">lost records (ring buffer full): {lost:,}'
        f"{f' ({attr(by_type)})' if by_type else ''}</li>",
        f"<li>incomplete requests: {report['incomplete']:,} of {report['requests']:,}</li>",
    ]
    cover = report.get("coverage") or {}
    if cover.get("requests"):
        items.append(
            "<li>share of a request's time that no probe or hook saw (unobserved stages): "
            f"p50 {cover['unobserved_p50_pct']}%, p99 {cover.get('unobserved_p99_pct')}%, "
            f"max {cover['unobserved_max_pct']}%; {cover['over_1_pct']:,} requests over 1%</li>"
        )
    footer = recording.footer
    if footer is None:
        items.append('<li class="bad">no footer: the recording was cut short</li>')
    else:
        for key, value in footer.items():
            if key in ("type", "lost_records", "correlator") or isinstance(value, dict | list):
                continue
            items.append(f"<li>{attr(key)}: {attr(_scalar(value))}</li>")
    problems = "".join(f"<li class=warn>{attr(p)}</li>" for p in recording.problems)
    extra = ""
    if footer is not None and isinstance(footer.get("correlator"), dict):
        extra = _details_table("correlator counters", footer["correlator"])
    return (
        '<section id="losses"><h2>Loss and coverage</h2>'
        f"<ul>{''.join(items)}{problems}</ul>{extra}</section>"
    )


def _recording(recording: Recording) -> str:
    header = recording.header
    if header is None:
        return (
            '<section id="recording"><h2>Recording</h2><p class="warn">The recording has no '
            "header line: host, kernel and probe plan unknown.</p></section>"
        )
    rows = []
    for key, value in header.items():
        if key in HIDDEN_HEADER_KEYS:
            continue
        shown = _scalar(value)
        if key == "started_unix_ns" and isinstance(value, int):
            shown = _utc_ns(value)
        elif key == "command" and isinstance(value, list):
            shown = shlex.join(str(part) for part in value)
        rows.append(f"<tr><th>{attr(key)}</th><td>{attr(shown)}</td></tr>")
    return (
        '<section id="recording"><h2>Recording</h2>'
        f"<table>{''.join(rows)}</table>{_plan(header.get('probe_plan'))}</section>"
    )


def _plan(plan: Any) -> str:
    """The probe plan: one line of counts, then a row per probe point."""
    if not isinstance(plan, list) or not plan:
        return "<p class=muted>No probe plan in the header.</p>"
    entries = [entry for entry in plan if isinstance(entry, dict)]
    chosen: dict[str, int] = {}
    absent = []
    for entry in entries:
        mechanism = entry.get("chosen")
        if mechanism:
            chosen[str(mechanism)] = chosen.get(str(mechanism), 0) + 1
        else:
            absent.append(str(entry.get("name", "?")))
    mechanisms = ", ".join(f"{k} {v}" for k, v in sorted(chosen.items()))
    line = f"{len(entries)} probe points: {sum(chosen.values())} attached ({mechanisms})"
    line += f"; absent: {', '.join(absent)}" if absent else "; none absent"
    rows = "".join(
        f"<tr><td>{attr(e.get('name', '?'))}</td><td>{attr(e.get('chosen') or 'absent')}</td>"
        f"<td>{'yes' if e.get('required') else ''}</td><td>{attr(e.get('summary', ''))}</td>"
        f"<td>{attr(e.get('gives_up', ''))}</td></tr>"
        for e in entries
    )
    return (
        f'<h3>Probe plan</h3><p id="plan-summary">{attr(line)}</p>'
        "<details><summary>every probe point</summary><table><tr><th>point</th>"
        "<th>mechanism</th><th>required</th><th>attached as</th><th>gives up</th></tr>"
        f"{rows}</table></details>"
    )


def _details_table(title: str, values: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{attr(k)}</td><td class=n>{attr(_scalar(v))}</td></tr>" for k, v in values.items()
    )
    return f"<details><summary>{attr(title)}</summary><table>{rows}</table></details>"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 100_000 else str(value)
    return json.dumps(value, separators=(", ", ": "), default=str)


def _utc(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _utc_ns(unix_ns: int) -> str:
    return _utc(datetime.datetime.fromtimestamp(unix_ns / 1e9, datetime.UTC))
