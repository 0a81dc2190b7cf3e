"""`reqtrace diff A B`: which stage moved between two recordings, and is it beyond noise?

For every stage (and the request total), overall and per group with --by (path, route or
status, as in `reqtrace report`): count, p50, p90 and p99 of A and of B (report.summarize,
nearest rank), their changes, and a verdict:

- moved (slower/faster): a two-sided Mann-Whitney U test on the per-request durations says
  A and B differ (p below `alpha` after Holm's correction over every test of the diff: a
  diff makes dozens of tests, and uncorrected some would pass by chance), AND the median
  moved by at least `min_change_pct` percent and `min_change_us` µs. Two runs on a live
  machine always differ a little (caches, frequency, neighbours); the floor says how much
  counts as a move, the test whether that move is more than the spread of the samples.
- below floor: the test says A and B differ, but the median moved less than the floor.
- unchanged: no evidence that they differ.
- too few: fewer than MIN_SAMPLES requests with that stage on one side.
- only in A / only in B: the stage (or group) appears on one side alone.

Two runs are two samples of the machine as well as of the code. Measured here: two
back-to-back runs of the same workload on this shared 2-core VM differed by 20-60% in the
kernel stages (a few µs) and by ~30 µs in `send`, with p < 1e-10: real differences of the
machine's state that a test on one pair of runs cannot tell from a change of the code. So
compare runs made under the same conditions, and set --min-us to the scale that matters.

A request's duration in a stage is the sum of its spans of that name (a request can have
several `unobserved` gaps), so counts are requests, not stage spans as in `report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracer.model.stages import LAYER_OF, STAGE_NAMES
from tracer.model.trace import RequestTrace
from tracer.recording.reader import Recording
from tracer.recording.report import format_us, group_key, select, summarize

MIN_SAMPLES = 8
TOTAL = "total"
ALL = "all requests"
PERCENTILES = ("p50", "p90", "p99")

SLOWER, FASTER, BELOW_FLOOR, UNCHANGED, TOO_FEW, ONLY_A, ONLY_B = (
    "slower",
    "faster",
    "below floor",
    "unchanged",
    "too few",
    "only in A",
    "only in B",
)
MOVED = (SLOWER, FASTER)


def stage_durations(traces: Sequence[RequestTrace]) -> dict[str, list[int]]:
    """Per stage name, each request's time in it (ns), in registry order; then `total`."""
    by_stage: dict[str, list[int]] = {}
    for trace in traces:
        if len(trace.stages) == len({stage.name for stage in trace.stages}):
            for stage in trace.stages:
                by_stage.setdefault(stage.name, []).append(stage.duration_ns)
        else:
            summed: dict[str, int] = {}
            for stage in trace.stages:
                summed[stage.name] = summed.get(stage.name, 0) + stage.duration_ns
            for name, ns in summed.items():
                by_stage.setdefault(name, []).append(ns)
    names = [name for name in STAGE_NAMES if name in by_stage]
    names += sorted(name for name in by_stage if name not in LAYER_OF)
    out = {name: by_stage[name] for name in names}
    out[TOTAL] = [trace.total_ns for trace in traces]
    return out


def mann_whitney_p(a: Sequence[int], b: Sequence[int]) -> float:
    """Two-sided Mann-Whitney U test p-value of two samples (scipy; exact for small ones)."""
    from scipy.stats import mannwhitneyu

    if len(set(a)) == 1 and set(a) == set(b):
        return 1.0  # identical constants: scipy would divide by a zero variance
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _change(a: float | None, b: float | None) -> tuple[float | None, float | None]:
    """(B - A in µs, relative change in %) of two summary values."""
    if a is None or b is None:
        return None, None
    delta = round(b - a, 1)
    if a == 0:
        return delta, None if b else 0.0
    return delta, round(100 * (b - a) / a, 1)


def compare(a: Sequence[int], b: Sequence[int]) -> dict[str, Any]:
    """One row of the diff (without its verdict): summaries, changes, raw p-value."""
    row: dict[str, Any] = {"a": summarize(list(a)), "b": summarize(list(b)), "change": {}}
    for name in PERCENTILES:
        delta, pct = _change(row["a"][f"{name}_us"], row["b"][f"{name}_us"])
        row["change"][f"{name}_us"] = delta
        row["change"][f"{name}_pct"] = pct
    tested = len(a) >= MIN_SAMPLES and len(b) >= MIN_SAMPLES
    row["p_value"] = mann_whitney_p(a, b) if tested else None
    return row


def diff_recordings(
    recording_a: Recording,
    recording_b: Recording,
    by: str | None = None,
    path: str | None = None,
    alpha: float = 0.01,
    min_change_pct: float = 10.0,
    min_change_us: float = 20.0,
) -> dict[str, Any]:
    """The diff JSON: settings, both sides, and per group (all requests first, then the
    groups of `by`) per stage: A, B, changes, p-values and verdict, plus a verdict line."""
    traces_a = select(recording_a.traces, path)
    traces_b = select(recording_b.traces, path)
    groups_a: dict[str, list[RequestTrace]] = {ALL: traces_a}
    groups_b: dict[str, list[RequestTrace]] = {ALL: traces_b}
    if by is not None:
        for traces, groups in ((traces_a, groups_a), (traces_b, groups_b)):
            for trace in traces:
                groups.setdefault(group_key(trace, by), []).append(trace)
    others = sorted(
        {*groups_a, *groups_b} - {ALL},
        key=lambda k: (-(len(groups_a.get(k, ())) + len(groups_b.get(k, ()))), k),
    )
    keys = [ALL, *others]
    compared: dict[str, Any] = {}
    tested: list[dict[str, Any]] = []
    for key in keys:
        members_a, members_b = groups_a.get(key, []), groups_b.get(key, [])
        durations_a, durations_b = stage_durations(members_a), stage_durations(members_b)
        names = [n for n in durations_a if n != TOTAL]
        names += [n for n in durations_b if n not in durations_a and n != TOTAL]
        names = [*_registry_order(names), TOTAL]
        stages: dict[str, Any] = {}
        for name in names:
            row = compare(durations_a.get(name, []), durations_b.get(name, []))
            stages[name] = row
            if row["p_value"] is not None:
                tested.append(row)
        compared[key] = {
            "requests_a": len(members_a),
            "requests_b": len(members_b),
            "stages": stages,
        }
    for row, adjusted in zip(tested, holm([row["p_value"] for row in tested]), strict=True):
        row["p_adjusted"] = adjusted
    for group in compared.values():
        for row in group["stages"].values():
            row.setdefault("p_adjusted", None)
            row["verdict"] = _verdict(row, alpha, min_change_pct, min_change_us)
    for key, group in compared.items():
        group["summary"] = verdict_line(key, group)
    return {
        "a": _side(recording_a, traces_a),
        "b": _side(recording_b, traces_b),
        "by": by,
        "path": path,
        "test": "Mann-Whitney U, two-sided, Holm-corrected",
        "alpha": alpha,
        "min_change_pct": min_change_pct,
        "min_change_us": min_change_us,
        "min_samples": MIN_SAMPLES,
        "tests": len(tested),
        "moved": sum(
            1 for g in compared.values() for r in g["stages"].values() if r["verdict"] in MOVED
        ),
        "groups": compared,
    }


def _registry_order(names: list[str]) -> list[str]:
    known = [name for name in STAGE_NAMES if name in names]
    return known + sorted(name for name in names if name not in LAYER_OF)


def _side(recording: Recording, traces: list[RequestTrace]) -> dict[str, Any]:
    return {
        "path": recording.path,
        "requests": len(traces),
        "recorded_requests": len(recording.traces),
        "lost_records": recording.lost_records,
        "problems": list(recording.problems),
    }


def _verdict(row: dict[str, Any], alpha: float, min_pct: float, min_us: float) -> str:
    count_a, count_b = row["a"]["count"], row["b"]["count"]
    if not count_a or not count_b:
        return ONLY_B if not count_a else ONLY_A
    if row["p_adjusted"] is None:
        return TOO_FEW
    delta, pct = row["change"]["p50_us"], row["change"]["p50_pct"]
    big_enough = abs(delta) >= min_us and (pct is None or abs(pct) >= min_pct)
    if row["p_adjusted"] >= alpha:
        return UNCHANGED
    if big_enough:
        return SLOWER if delta > 0 else FASTER
    return BELOW_FLOOR


def _pct(value: float | None) -> str:
    if value is None:
        return "new"
    if round(value) == 0:
        return "0%"
    return f"{value:+.0f}%"


def verdict_line(key: str, group: dict[str, Any]) -> str:
    """One line for a group: what moved (its headline percentile), then what did not.

    e.g. "/sleep: app p50 +392% (5.10 ms → 25.10 ms, significant); total p50 +380% (...);
    unchanged: softirq, wakeup, recv, parse, send"."""
    if not group["requests_a"] or not group["requests_b"]:
        side = "B" if group["requests_b"] else "A"
        return f"{key}: only in {side} ({group['requests_a'] or group['requests_b']} requests)"
    moved, unchanged, few = [], [], []
    for name, row in group["stages"].items():
        verdict = row["verdict"]
        if verdict in MOVED:
            best = _headline(row)
            before, after = format_us(row["a"][f"{best}_us"]), format_us(row["b"][f"{best}_us"])
            change = _pct(row["change"][f"{best}_pct"])
            moved.append(f"{name} {best} {change} ({before} → {after}, significant)")
        elif verdict in (UNCHANGED, BELOW_FLOOR):
            unchanged.append(name)
        elif verdict in (ONLY_A, ONLY_B):
            few.append(f"{name} {verdict}")
    if not moved and not unchanged:
        counts = f"{group['requests_a']} → {group['requests_b']} requests"
        return f"{key}: too few requests to compare ({counts})" + "".join(f"; {f}" for f in few)
    parts = moved or ["nothing moved beyond noise"]
    if unchanged:
        parts.append("unchanged: " + ", ".join(unchanged))
    if few:
        parts.append(", ".join(few))
    return f"{key}: " + "; ".join(parts)


def _headline(row: dict[str, Any]) -> str:
    """The percentile that changed most in the direction of the move ("p99")."""
    change = row["change"]
    direction = 1 if row["verdict"] == SLOWER else -1
    best = "p50"
    for name in PERCENTILES:
        pct = change[f"{name}_pct"]
        if pct is not None and pct * direction > (change[f"{best}_pct"] or 0) * direction:
            best = name
    return best


# -- for people -----------------------------------------------------------------------------


WIDE = 120  # columns the full table needs; narrower consoles get the compact one


def render_diff(diff: dict[str, Any], console: Console) -> None:
    """One table per group, then the verdict lines. Per stage: A → B at p50, p90 and p99
    with their changes, the Holm-adjusted p and the verdict; on a console narrower than
    WIDE, A → B at p50 only and the changes of all three."""
    a, b = diff["a"], diff["b"]
    console.print(f"A: {a['path']} ({a['requests']} requests)   B: {b['path']} ({b['requests']})")
    wide = console.width >= WIDE
    for key, group in diff["groups"].items():
        title = f"{key}: {group['requests_a']} → {group['requests_b']} requests"
        if diff["by"] and key != ALL:
            title = f"{diff['by']} {title}"
        table = Table(
            title=title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            padding=(0, 1),
            collapse_padding=True,
        )
        table.add_column("stage", no_wrap=True)
        table.add_column("n A→B", justify="right", no_wrap=True)
        for name in PERCENTILES:
            if wide or name == "p50":
                table.add_column(f"{name} A → B", justify="right", no_wrap=True)
            table.add_column("Δ" if wide else f"Δ{name}", justify="right", no_wrap=True)
        table.add_column("p", justify="right", no_wrap=True)
        table.add_column("verdict", no_wrap=True)
        for name, row in group["stages"].items():
            if name == TOTAL:
                table.add_section()
            both = row["a"]["count"] and row["b"]["count"]
            cells = [name, f"{row['a']['count']}→{row['b']['count']}"]
            for percentile in PERCENTILES:
                if wide or percentile == "p50":
                    before = _short(row["a"][f"{percentile}_us"])
                    after = _short(row["b"][f"{percentile}_us"])
                    cells.append(f"{before} → {after}")
                cells.append(_pct(row["change"][f"{percentile}_pct"]) if both else "")
            p = row["p_adjusted"]
            cells.append(_p(p) if p is not None else "")
            cells.append(_verdict_cell(row))
            table.add_row(*cells, style="bold" if name == TOTAL else None)
        console.print(table)
    console.print(
        f"moved = Mann-Whitney U p < {diff['alpha']:g} (Holm-corrected over {diff['tests']}"
        f" tests) and the median changed by ≥ {diff['min_change_pct']:g}% and"
        f" ≥ {diff['min_change_us']:g} µs"
    )
    for group in diff["groups"].values():
        console.print(Text(group["summary"], style="bold" if _moved(group) else ""))
    for side, name in ((a, "A"), (b, "B")):
        if side["lost_records"]:
            console.print(Text(f"{name} lost {side['lost_records']} records", style="yellow"))
        for problem in side["problems"]:
            console.print(Text(f"warning: {name}: {problem}", style="yellow"))


def _short(us: float | None) -> str:
    return format_us(us).replace(" ", "")


def _moved(group: dict[str, Any]) -> bool:
    return any(row["verdict"] in MOVED for row in group["stages"].values())


def _verdict_cell(row: dict[str, Any]) -> Text:
    verdict = row["verdict"]
    style = {SLOWER: "bold red", FASTER: "bold green"}.get(verdict, "dim")
    return Text(verdict, style=style)


def _p(value: float) -> str:
    if value == 0 or value < 1e-300:
        return "<1e-300"
    if value < 0.001:
        return f"{value:.0e}"
    return f"{value:.3f}" if value < 1 else "1"
