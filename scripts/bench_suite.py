"""`scripts/bench`: every reqtrace benchmark side by side in one run, printed as one table.

Sections, all in each round (so slow drift of a shared machine hits every one of them), the
order of the two variants of a comparison alternating from round to round:

  server      `reqtrace serve` vs uvicorn --http httptools, same loop (scripts/bench_server)
  traced      the bundled server untraced vs inside a `reqtrace run` session
              (scripts/bench_traced.py): req/s, p99, ring-buffer records and eBPF ns per request
  correlator  Correlator.feed offline on the synthetic workload vs the reorder window alone
              (scripts/bench_correlator)
  dashboard   `reqtrace demo --rate 200` in a detached tmux pane: the tracer process's CPU;
              and the dashboard alone on a synthetic feed at 200, 5,000 and 20,000 req/s:
              its CPU and, at 20,000, key-to-screen latency (scripts/bench_dashboard.py)

Every run is bounded (wrk -d, the demo's --duration), traffic only goes to 127.0.0.1, and
servers, probes, tmux and the demo are stopped on failure, Ctrl-C or SIGTERM too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from scripts.bench_table import (  # noqa: E402
    Row,
    as_json,
    machine_facts,
    median_best,
    number,
    ratio,
    render,
)


def load_script(name: str) -> ModuleType:
    """One of the benchmark programs of scripts/ (bench_server, bench_correlator)."""
    return importlib.import_module(f"scripts.{name}")


@dataclass
class Settings:
    rounds: int
    seconds: float  # per timed wrk run
    connections: int
    loop: str
    correlator_requests: int
    dashboard_rate: float
    dashboard_connections: int
    dashboard_warmup_s: float
    dashboard_window_s: float
    pins: tuple[int | None, int | None]
    skip: list[str] = field(default_factory=list)
    paced_seconds: float = 30.0


SECTIONS = ("server", "traced", "budget", "correlator", "otlp", "dashboard")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 2)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 5, quick 2)")
    parser.add_argument("--quick", action="store_true", help="about 2 minutes instead of 5")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    parser.add_argument("--rate", type=float, default=200.0, help="dashboard section's req/s")
    parser.add_argument("--skip", action="append", choices=SECTIONS, default=[])
    parser.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    parser.add_argument(
        "--paced-seconds",
        type=float,
        help="length of each fixed-rate run of the budget section (default 30, quick 10; "
        "300 for the 5-minute memory check)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    loop = args.loop
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    pins: tuple[int | None, int | None] = (0, 1) if (os.cpu_count() or 1) >= 2 else (None, None)
    settings = Settings(
        rounds=args.rounds or (2 if quick else 3),
        seconds=args.seconds or (2.0 if quick else 5.0),
        connections=args.connections,
        loop=loop,
        correlator_requests=20_000 if quick else 50_000,
        dashboard_rate=args.rate,
        dashboard_connections=8,
        dashboard_warmup_s=2.0 if quick else 4.0,
        dashboard_window_s=6.0 if quick else 15.0,
        pins=pins,
        skip=list(args.skip),
        paced_seconds=args.paced_seconds or (10.0 if quick else 30.0),
    )
    if settings.rounds < 1 or settings.seconds <= 0:
        parser.error("--rounds and --seconds must be positive")
    return args, settings


def rotated(variants: Sequence[str], round_number: int) -> list[str]:
    """The variants in this round's order: each goes first in turn."""
    shift = round_number % len(variants)
    return [*variants[shift:], *variants[:shift]]


def preflight(settings: Settings) -> list[str]:
    """Sections that cannot run here, with the reason (they are skipped, and say so)."""
    reasons = []
    if not shutil.which("wrk"):
        raise SystemExit("scripts/bench: wrk is not installed (apt-get install wrk)")
    needs_root = ("traced", "dashboard")
    if os.geteuid() != 0:
        for section in needs_root:
            if section not in settings.skip:
                settings.skip.append(section)
                reasons.append(f"{section}: skipped, tracing needs root (sudo scripts/bench)")
    else:
        from tracer.kernel.system_facts import gather, tracing_blocker

        blocker = tracing_blocker(gather())
        if blocker:
            for section in needs_root:
                if section not in settings.skip:
                    settings.skip.append(section)
            reasons.append(f"traced, dashboard: skipped, {blocker}")
    if "dashboard" not in settings.skip and not shutil.which("tmux"):
        settings.skip.append("dashboard")
        reasons.append("dashboard: skipped, tmux is not installed")
    return reasons


class Measurements:
    """Every run of every section, as plain data (also what --json keeps under "runs")."""

    def __init__(self) -> None:
        self.server: dict[str, list[dict[str, float]]] = {"reqtrace": [], "uvicorn": []}
        self.traced: dict[str, list[dict[str, Any]]] = {"untraced": [], "traced": []}
        self.correlator: dict[str, list[float]] = {"correlator": [], "reorder": []}
        self.correlator_workload: dict[str, int] = {}
        self.dashboard: list[dict[str, float]] = []
        self.dashboard_synthetic: list[dict[str, Any]] = []
        self.budget: list[dict[str, Any]] = []
        self.otlp_us: list[float] = []

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "traced": self.traced,
            "correlator": {**self.correlator, "workload": self.correlator_workload},
            "dashboard": self.dashboard,
            "dashboard_synthetic": self.dashboard_synthetic,
            "budget": self.budget,
            "otlp_us_per_request": self.otlp_us,
        }


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- sections: one round each ------------------------------------------------------------


def server_round(
    bench_server: ModuleType, settings: Settings, app_dir: str, found: Measurements, n: int
) -> None:
    args = argparse.Namespace(
        app="bench_hello:app", path="/", connections=settings.connections, duration=settings.seconds
    )
    for variant in rotated(("reqtrace", "uvicorn"), n):
        rate, cpu_us, _ = bench_server.measure(variant, settings.loop, app_dir, args, settings.pins)
        found.server[variant].append({"requests_per_s": rate, "server_cpu_us_per_request": cpu_us})
        say(f"  server     {variant:<9} {rate:9,.0f} req/s  {cpu_us:6.2f} us server CPU/request")


def traced_round(settings: Settings, found: Measurements, n: int) -> None:
    from scripts.bench_traced import traced_run, untraced_run

    for variant in rotated(("untraced", "traced"), n):
        measure = traced_run if variant == "traced" else untraced_run
        run = measure(settings.loop, settings.seconds, settings.connections, settings.pins)
        data = asdict(run)
        data["wrk"] = {
            "requests": run.wrk.requests,
            "requests_per_s": run.wrk.requests_per_s,
            "latency_ms": run.wrk.latency_ms,
            "socket_errors": run.wrk.socket_errors,
        }
        found.traced[variant].append(data)
        extra = ""
        if variant == "traced":
            extra = (
                f", {run.per_request(run.kernel_records + run.lost_records):.2f} records/req,"
                f" {run.per_request(run.bpf_ns):,.0f} eBPF ns/req, lost {run.lost_records},"
                f" {run.traces} traces, caught up {run.pipeline_behind_s:.1f} s after wrk"
            )
        p99 = run.wrk.p99_ms
        say(
            f"  traced     {variant:<9} {run.wrk.requests_per_s:9,.0f} req/s  p99 "
            f"{number(p99, 2)} ms{extra}"
            + (f"  ({run.wrk.socket_errors})" if run.wrk.socket_errors else "")
        )


def budget_runs(settings: Settings, found: Measurements) -> None:
    """Two fixed-rate traced runs at 0.8x the untraced saturation rate: without and with
    --record (scripts/bench_budget.py)."""
    from scripts.bench_budget import paced_run

    saturation = statistics.median(run["wrk"]["requests_per_s"] for run in found.traced["untraced"])
    rate = 0.8 * saturation
    for record in (False, True):
        run = paced_run(settings.loop, rate, settings.paced_seconds, settings.pins, record)
        found.budget.append({**asdict(run), "rss_drift": run.rss_drift})
        say(
            f"  budget     {'recorded' if record else 'paced':<9} offered {rate:,.0f} req/s, "
            f"got {run.achieved_rate:,.0f}; lost {run.lost_records}, hooks dropped "
            f"{run.hooks_dropped}; pipeline {run.pipeline_cpu_us_per_request:.1f} µs/req; "
            f"RSS {run.rss_mib[0] if run.rss_mib else 0:.0f} -> "
            f"{run.rss_mib[-1] if run.rss_mib else 0:.0f} MiB"
        )


def correlator_round(
    bench_correlator: ModuleType, records: list[Any], found: Measurements, n: int
) -> None:
    for variant in rotated(("correlator", "reorder"), n):
        if variant == "correlator":
            seconds, emitted = bench_correlator.time_correlator(records)
            if emitted != found.correlator_workload["requests"]:
                raise RuntimeError(f"correlator emitted {emitted} traces, not one per request")
        else:
            seconds = bench_correlator.time_reorder_only(records)
        found.correlator[variant].append(len(records) / seconds)
        say(f"  correlator {variant:<10} {len(records) / seconds:9,.0f} records/s")


SYNTHETIC_RATES = (200.0, 5_000.0, 20_000.0)  # the dashboard alone (targets 5%, 10%, 10%)
KEY_PRESSES = 20  # timed at the highest rate (target p99 <= 100 ms)


def dashboard_round(settings: Settings, found: Measurements) -> None:
    from scripts.bench_dashboard import dashboard_run

    run = dashboard_run(
        settings.dashboard_rate,
        settings.dashboard_connections,
        settings.dashboard_warmup_s,
        settings.dashboard_window_s,
    )
    found.dashboard.append(
        {
            "window_s": run.window_s,
            "requests": run.requests,
            "requests_per_s": run.rate,
            "process_cpu_s": run.process_cpu_s,
            "pipeline_cpu_s": run.pipeline_cpu_s,
            "process_percent": run.percent_of_core(run.process_cpu_s),
            "pipeline_percent": run.percent_of_core(run.pipeline_own_cpu_s),
            "dashboard_percent": run.percent_of_core(run.dashboard_cpu_s),
            "process_us_per_request": run.us_per_request(run.process_cpu_s),
            "pipeline_us_per_request": run.us_per_request(run.pipeline_own_cpu_s),
            "dashboard_us_per_request": run.us_per_request(run.dashboard_cpu_s),
        }
    )
    say(
        f"  dashboard  {run.rate:6.0f} req/s: tracer process "
        f"{run.percent_of_core(run.process_cpu_s):5.1f}% of a core "
        f"(pipeline {run.percent_of_core(run.pipeline_own_cpu_s):.1f}%, dashboard "
        f"{run.percent_of_core(run.dashboard_cpu_s):.1f}%)"
    )
    from scripts.bench_dashboard import synthetic_run

    for rate in SYNTHETIC_RATES:
        keys = KEY_PRESSES if rate == SYNTHETIC_RATES[-1] else 0
        synthetic = synthetic_run(
            rate, settings.dashboard_warmup_s, settings.dashboard_window_s, key_presses=keys
        )
        found.dashboard_synthetic.append(synthetic.as_dict())
        say(
            f"  dashboard  alone, synthetic {synthetic.rate:6.0f} req/s: "
            f"{synthetic.dashboard_percent:5.1f}% of a core"
            + (f", key p99 {synthetic.key_p(0.99):.0f} ms" if keys else "")
        )


# -- the table ---------------------------------------------------------------------------


Stat = tuple[float | None, float | None]  # (median, best) of the rounds


def _stats(values: Sequence[float], higher_is_better: bool = True) -> Stat:
    if not values:
        return None, None
    return statistics.median(values), (max(values) if higher_is_better else min(values))


def _column(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [float(run[key]) for run in runs]


def compared(
    what: str,
    ours: Stat,
    baseline: Stat | None,
    note: str,
    digits: int = 0,
    unit: str = "",
    with_ratio: bool = True,
) -> Row:
    """A row of medians (best in brackets), with the numbers kept for --json too."""
    values: dict[str, Any] = {"reqtrace": {"median": ours[0], "best": ours[1]}}
    cells = [median_best(*ours, digits, unit), "—", "—"]
    if baseline is not None:
        values["baseline"] = {"median": baseline[0], "best": baseline[1]}
        cells[1] = median_best(*baseline, digits, unit)
        if with_ratio:
            values["ratio"] = ours[0] / baseline[0] if ours[0] is not None and baseline[0] else None
            cells[2] = ratio(ours[0], baseline[0])
    return Row(what, *cells, note=note, values=values)


def build_rows(settings: Settings, found: Measurements) -> list[Row]:
    rows: list[Row] = []
    loop = settings.loop
    if found.server["reqtrace"]:
        ours, theirs = found.server["reqtrace"], found.server["uvicorn"]
        rows.append(
            compared(
                f"requests/s, hello world ({loop}): reqtrace serve | uvicorn httptools",
                _stats(_column(ours, "requests_per_s")),
                _stats(_column(theirs, "requests_per_s")),
                "wrk -t1 keep-alive, access logs off, lifespan off, the same raw ASGI app; "
                "median of the rounds (best run in brackets: on a shared machine other load "
                "only slows runs down); ratio of medians, above 1 = reqtrace faster.",
            )
        )
        rows.append(
            compared(
                "server CPU µs per request: reqtrace serve | uvicorn",
                _stats(_column(ours, "server_cpu_us_per_request"), higher_is_better=False),
                _stats(_column(theirs, "server_cpu_us_per_request"), higher_is_better=False),
                "user+sys CPU of the server process during the timed wrk run / requests "
                "(includes its kernel time: syscalls, TCP); steadier than req/s when other "
                "work competes for the CPUs; below 1 = reqtrace cheaper.",
                digits=1,
            )
        )
    traced, untraced = found.traced["traced"], found.traced["untraced"]
    if traced and untraced:
        rows += traced_rows(traced, untraced)
    if found.correlator["correlator"]:
        workload = found.correlator_workload
        rows.append(
            compared(
                "correlator records/s, offline | reorder window alone",
                _stats(found.correlator["correlator"]),
                _stats(found.correlator["reorder"]),
                f"Correlator.feed + flush on the synthetic keep-alive workload of "
                f"tracer/correlate/synthetic.py ({workload['records']:,} records, "
                f"{workload['requests']:,} requests on {workload['connections']} connections, "
                f"live arrival order), single thread; baseline = pushing the same records "
                f"through the reorder window only (the floor any correlation costs). "
                f"Target for live runs: >= 200k records/s.",
            )
        )
    if found.otlp_us:
        pipeline = [
            run["pipeline_cpu_us_per_request"] for run in found.traced["traced"]
        ]  # the same run's pipeline, beside it
        rows.append(
            compared(
                "OTLP export CPU µs per request (offline) | tracer pipeline (traced)",
                _stats(found.otlp_us, higher_is_better=False),
                _stats(pipeline, higher_is_better=False) if pipeline else None,
                "building a request's spans (one per stage) and encoding them with the "
                "OpenTelemetry exporter's protobuf encoder (scripts/bench_otlp.py), no network; "
                "the live exporter runs on its own thread, capped at 25% of a core, and "
                "drops (counted) what it cannot send.",
                digits=1,
            )
        )
    if found.dashboard:
        rows += dashboard_rows(settings, found.dashboard)
    if found.dashboard_synthetic:
        rows += synthetic_dashboard_rows(settings, found.dashboard_synthetic)
    rows += budget_rows(settings, found)
    return rows


def _verdict(value: float | None, target: float, at_most: bool) -> str:
    if value is None:
        return "—"
    met = value <= target if at_most else value >= target
    return "met" if met else "MISSED"


def budget_rows(settings: Settings, found: Measurements) -> list[Row]:
    """Issue 14's budget: each figure as a ratio, with its target and whether it was met."""
    rows: list[Row] = []

    def target_row(what: str, value: float | None, target: float, at_most: bool, note: str,
                   digits: int = 2) -> None:  # fmt: skip
        shown = "—" if value is None else f"{value:.{digits}f}x"
        sign = "≤" if at_most else "≥"
        rows.append(
            Row(f"budget: {what}", shown, f"{sign} {target:.{digits}f}x (target)",
                _verdict(value, target, at_most), note=note,
                values={"reqtrace": value, "target": target, "at_most": at_most})
        )  # fmt: skip

    traced, untraced = found.traced["traced"], found.traced["untraced"]
    if traced and untraced:
        server = statistics.median(_column(untraced, "server_cpu_us_per_request"))
        traced_cpu = statistics.median(_column(traced, "server_cpu_us_per_request"))
        pipeline = statistics.median(_column(traced, "pipeline_cpu_us_per_request"))
        requests = sum(run["wrk"]["requests"] for run in traced) or 1
        bpf_us = sum(run["bpf_ns"] for run in traced) / requests / 1000
        runs = sum(run["bpf_runs"] for run in traced) / requests
        rate = statistics.median(run["wrk"]["requests_per_s"] for run in traced)
        base_rate = statistics.median(run["wrk"]["requests_per_s"] for run in untraced)
        p99 = [run["wrk"]["latency_ms"].get(99) for run in traced]
        base_p99 = [run["wrk"]["latency_ms"].get(99) for run in untraced]
        p99_ratio = None
        if all(p99) and all(base_p99):
            p99_ratio = statistics.median(p99) / statistics.median(base_p99)  # type: ignore[type-var]
        target_row(
            "tracer pipeline CPU per request / untraced server CPU per request",
            pipeline / server,
            0.35,
            True,
            f"{pipeline:.1f} µs / {server:.1f} µs (medians of the closed-loop runs)",
        )
        target_row(
            "eBPF time per request / untraced server CPU per request",
            bpf_us / server,
            0.10,
            True,
            f"{bpf_us * 1000:,.0f} ns / {server:.1f} µs; {runs:.1f} program runs per "
            f"request, {bpf_us * 1000 / runs if runs else 0:,.0f} ns per run (bpf_stats "
            f"under-reports the kernel-side cost ~2.5x: see the server CPU row)",
        )
        target_row(
            "traced server CPU per request / untraced",
            traced_cpu / server,
            1.25,
            True,
            "the timing hooks and the eBPF programs run in the server's own syscalls",
        )
        target_row(
            "requests/s traced / untraced",
            rate / base_rate,
            0.80,
            False,
            "wrk closed loop, medians of the rounds",
        )
        target_row(
            "p99 latency traced / untraced",
            p99_ratio,
            1.50,
            True,
            "wrk --latency, medians of the rounds",
        )
    if found.correlator["correlator"]:
        ratio_value = statistics.median(found.correlator["correlator"]) / statistics.median(
            found.correlator["reorder"]
        )
        target_row(
            "correlator offline / reorder window alone (records/s)",
            ratio_value,
            0.60,
            False,
            "the same synthetic workload through both",
        )
    paced = [run for run in found.budget if not run["record"]]
    recorded = [run for run in found.budget if run["record"]]
    if paced:
        run = paced[0]
        losses = run["lost_records"] + run["hooks_dropped"]
        rows.append(
            Row("budget: records lost + hook records dropped at 0.8x saturation, fixed rate",
                f"{losses:,}", "0 (target)", "met" if losses == 0 else "MISSED",
                note=f"{settings.paced_seconds:g} s at {run['offered_rate']:,.0f} req/s offered "
                f"({run['achieved_rate']:,.0f} served; wrk paced with a Lua delay over "
                f"100 connections): {run['lost_records']:,} ring-buffer records lost, "
                f"{run['hooks_dropped']:,} hook records dropped, {run['traces']:,} traces.",
                values={"reqtrace": losses, "lost_records": run["lost_records"],
                        "hooks_dropped": run["hooks_dropped"]})
        )  # fmt: skip
        drift = run["rss_drift"]
        rows.append(
            Row("budget: tracer RSS, last / first sample of the fixed-rate run",
                "—" if drift is None else f"{drift:.2f}x", "0.90x to 1.10x (target)",
                "—" if drift is None else ("met" if 0.9 <= drift <= 1.1 else "MISSED"),
                note=f"sampled every second over {settings.paced_seconds:g} s (the target is "
                f"for 5 minutes: --paced-seconds 300); {run['rss_mib'][:1]} -> "
                f"{run['rss_mib'][-1:]} MiB", values={"reqtrace": drift})
        )  # fmt: skip
        if recorded:
            extra = (
                recorded[0]["pipeline_cpu_us_per_request"] / run["pipeline_cpu_us_per_request"] - 1
            )
            rows.append(
                Row("budget: --record's extra pipeline CPU per request, fixed rate",
                    f"{100 * extra:+.0f}%", "≤ +15% (target)", "met" if extra <= 0.15 else "MISSED",
                    note=f"{recorded[0]['pipeline_cpu_us_per_request']:.1f} vs "
                    f"{run['pipeline_cpu_us_per_request']:.1f} µs per request",
                    values={"reqtrace": extra})
            )  # fmt: skip
    return rows


def traced_rows(traced: list[dict[str, Any]], untraced: list[dict[str, Any]]) -> list[Row]:
    def wrk_values(runs: list[dict[str, Any]], key: str) -> list[float]:
        return [float(run["wrk"][key]) for run in runs]

    def p99s(runs: list[dict[str, Any]]) -> list[float]:
        return [run["wrk"]["latency_ms"][99] for run in runs if 99 in run["wrk"]["latency_ms"]]

    requests = sum(run["wrk"]["requests"] for run in traced)
    taken = sum(run["kernel_records"] for run in traced)
    hooks = sum(run["hook_records"] for run in traced)
    lost = sum(run["lost_records"] for run in traced)
    bpf_ns = sum(run["bpf_ns"] for run in traced)
    bpf_runs = sum(run["bpf_runs"] for run in traced)
    traces = sum(run["traces"] for run in traced)
    hooks_dropped = sum(run["hooks_dropped"] for run in traced)
    behind = max(run["pipeline_behind_s"] for run in traced)
    per_request = (lambda value: value / requests) if requests else (lambda value: None)
    records_row = Row(
        "ring-buffer records per request (traced)",
        records_cell(taken, lost, requests),
        "≤ 4 (target)",
        note=f"records the probes wrote for the timed runs (taken by the pipeline, which "
        f"is given up to 20 s after wrk stops to catch up, + counted as lost because the "
        f"ring buffer was full) / wrk's requests: ({taken:,} + {lost:,}) / {requests:,}. "
        f"Records are lost when the pipeline thread falls behind (here it shares its CPU "
        f"with wrk; it needed up to {behind:.1f} s after wrk stopped to catch up). The "
        f"server's hook records come through a pipe, not the ring buffer: "
        f"{hooks / requests if requests else 0:.2f} per request ({hooks_dropped:,} dropped "
        f"by the server, pipe full). Traces the correlator emitted for these runs: "
        f"{traces:,}.",
        values={
            "reqtrace": per_request(taken + lost),
            "taken": taken,
            "lost": lost,
            "requests": requests,
            "hook_records": hooks,
            "hook_records_dropped": hooks_dropped,
            "traces": traces,
            "pipeline_behind_s_max": behind,
        },
    )
    bpf_row = Row(
        "eBPF ns per request (traced)",
        number(per_request(bpf_ns), 0),
        note=f"sum of run_time_ns of reqtrace's BPF programs (bpf_stats) during the timed "
        f"runs / requests; {bpf_runs / requests if requests else 0:.1f} program runs per "
        f"request. Spent in the kernel on the server's and the softirq's CPU time.",
        values={"reqtrace": per_request(bpf_ns), "program_runs_per_request": per_request(bpf_runs)},
    )
    return [
        compared(
            "requests/s, bundled server: traced | untraced",
            _stats(wrk_values(traced, "requests_per_s")),
            _stats(wrk_values(untraced, "requests_per_s")),
            "traced = a reqtrace run session (probes attached and filtered to the server, "
            "timing hooks on, the pipeline thread draining the ring buffer every 20 ms and "
            "feeding the correlator; traces kept in memory, no dashboard); untraced = "
            "reqtrace serve with hooks off and nothing attached. kernel.bpf_stats_enabled=1 "
            "during the traced runs (two clock reads per program run).",
        ),
        compared(
            "p99 latency ms (wrk --latency): traced | untraced",
            _stats(p99s(traced), higher_is_better=False),
            _stats(p99s(untraced), higher_is_better=False),
            "wrk's 99th percentile over the timed run with all connections busy "
            "(closed loop: it grows with the server's per-request cost, and with any "
            "preemption of the server by other work); median of rounds, best = lowest.",
            digits=2,
        ),
        compared(
            "server CPU µs per request: traced | untraced",
            _stats(_column(traced, "server_cpu_us_per_request"), higher_is_better=False),
            _stats(_column(untraced, "server_cpu_us_per_request"), higher_is_better=False),
            "user+sys CPU of the server process / requests; the traced server pays for its "
            "timing hooks and for the eBPF programs run in its own syscalls.",
            digits=1,
        ),
        records_row,
        bpf_row,
        compared(
            "tracer pipeline CPU µs per request (traced)",
            _stats(_column(traced, "pipeline_cpu_us_per_request"), higher_is_better=False),
            None,
            "CPU time of the reqtrace-pipeline thread (ring-buffer drain, decoding, hook "
            "pipe, correlator, sinks) from the start of the timed run until it caught up, "
            "/ requests served; it runs on the wrk CPU here.",
            digits=1,
        ),
    ]


def dashboard_rows(settings: Settings, runs: list[dict[str, float]]) -> list[Row]:
    def stat(key: str) -> Stat:
        return _stats([run[key] for run in runs], higher_is_better=False)

    rate = statistics.median(run["requests_per_s"] for run in runs)
    where = f"reqtrace demo at {rate:.0f} req/s"
    return [
        compared(
            f"{where}: tracer process CPU, % of one core",
            stat("process_percent"),
            None,
            f"reqtrace demo --rate {settings.dashboard_rate:g} --connections "
            f"{settings.dashboard_connections} in a detached 160x48 tmux pane; user+sys CPU "
            f"of the tracer process (Textual dashboard + pipeline thread, not the server child "
            f"or the load generator) over a {settings.dashboard_window_s:g} s window after "
            f"{settings.dashboard_warmup_s:g} s of warm-up; best = lowest.",
            digits=1,
            unit="%",
        ),
        compared(
            f"{where}: of which pipeline thread | dashboard",
            stat("pipeline_percent"),
            stat("dashboard_percent"),
            "the reqtrace-pipeline thread's own CPU time (/proc/PID/task/TID/schedstat, less "
            "its time inside the dashboard's LiveFeed.put) vs the dashboard: everything else "
            "in the process (the Textual UI thread, its timers, the header's status probe) "
            "plus that feed.put time (the dashboard's store: aggregates, list thinning).",
            digits=1,
            unit="%",
            with_ratio=False,
        ),
        compared(
            f"{where}: CPU µs per request, process | pipeline thread",
            stat("process_us_per_request"),
            stat("pipeline_us_per_request"),
            "the same CPU time / requests traced in the window (the demo mix: /, /json, "
            "/slow, /cpu, /upload 256 KiB, /large 1 MiB, errors). At this low rate the "
            "pipeline's fixed cost (a poll every 20 ms) weighs on every request.",
            with_ratio=False,
        ),
    ]


def synthetic_dashboard_rows(settings: Settings, runs: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for rate, target in zip(
        SYNTHETIC_RATES, ("≤ 5% (target)", "≤ 10% (target)", "≤ 10% (target)"), strict=True
    ):
        mine = [run for run in runs if abs(run["requests_per_s"] - rate) < rate * 0.2]
        percents = [run["dashboard_percent"] for run in mine]
        row = compared(
            f"dashboard alone at {rate:,.0f} req/s (synthetic feed): CPU, % of one core",
            _stats(percents, higher_is_better=False),
            None,
            f"the Textual dashboard in a detached 160x48 tmux pane on a live feed that a "
            f"thread fills with synthetic traces (dashboards/synthetic.py, the demo's mix) "
            f"every 20 ms, as the pipeline does; CPU of the process less that feeder thread, "
            f"plus the feeder's time inside feed.put (the dashboard's store), over a "
            f"{settings.dashboard_window_s:g} s window (keys are timed after it); no server, "
            f"no BPF. Flat with the rate: the list is thinned and drawn for what is on screen."
            if not rows
            else "",
            digits=1,
            unit="%",
        )
        row.baseline = target
        rows.append(row)
    keys = [ms for run in runs for ms in run["key_latency_ms"]]
    if keys:
        keys.sort()
        p99 = keys[min(len(keys) - 1, max(0, round(0.99 * len(keys)) - 1))]
        rows.append(
            Row(
                f"dashboard alone at {SYNTHETIC_RATES[-1]:,.0f} req/s: key-to-screen ms, p99",
                f"{p99:.0f} (p50 {statistics.median(keys):.0f})",
                "≤ 100 (target)",
                note=f"{len(keys)} presses of j/k sent with tmux send-keys while the feed "
                f"runs (after the CPU window); time until tmux's screen (capture-pane) shows "
                f"the cursor moved; includes tmux's own round trips (a few ms per capture).",
                values={"reqtrace": p99, "p50": statistics.median(keys), "keys": len(keys)},
            )
        )
    return rows


def records_cell(taken: int, lost: int, requests: int) -> str:
    """ "1.71 (41% lost)": records written per request, and the share the ring buffer lost."""
    if not requests:
        return "—"
    written = taken + lost
    cell = number(written / requests, 2)
    if lost:
        cell += f" ({lost / written:.0%} lost)"
    return cell


def cpu_ticks() -> list[int]:
    """The machine's CPU time so far (/proc/stat "cpu" line: user ... steal)."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def machine_load(before: list[int], after: list[int], load_average: float) -> str:
    """How busy the CPUs were and how much time the hypervisor stole: noise indicators."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta) or 1
    steal, idle = delta[7], delta[3] + delta[4]
    return (
        f"the CPUs were {100 - idle / total * 100:.0f}% busy over the bench (this bench "
        f"included), {steal / total * 100:.0f}% stolen by the hypervisor; load average "
        f"{load_average:.2f} before, {os.getloadavg()[0]:.2f} after (other work on the "
        f"machine makes every number noisier)"
    )


def setup_lines(settings: Settings) -> list[str]:
    server_cpu, client_cpu = settings.pins
    pinning = (
        f"servers pinned to CPU {server_cpu}; wrk, this script and the tracer on CPU {client_cpu}"
        if server_cpu is not None
        else "one CPU: nothing pinned"
    )
    return [
        f"{settings.rounds} rounds, the variants of each comparison alternating in order; "
        f"cells are the median of the rounds, best run in brackets",
        f"wrk -t1 -c{settings.connections} keep-alive, {settings.seconds:g} s timed runs after "
        f"1 s warm-up, 127.0.0.1 only; {pinning}; event loop {settings.loop}",
    ]


# -- main --------------------------------------------------------------------------------


def run_rounds(settings: Settings, found: Measurements) -> None:
    skip = settings.skip
    bench_server = load_script("bench_server") if "server" not in skip else None
    bench_correlator = load_script("bench_correlator") if "correlator" not in skip else None
    records: list[Any] = []
    if bench_correlator is not None:
        connections = 64
        records = bench_correlator.workload(settings.correlator_requests, connections, 20_000)
        found.correlator_workload = {
            "records": len(records),
            "requests": settings.correlator_requests,
            "connections": connections,
        }
    from scripts.bench_traced import bpf_stats_enabled

    with tempfile.TemporaryDirectory(prefix="reqtrace-bench-") as app_dir:
        if bench_server is not None:
            Path(app_dir, "bench_hello.py").write_text(bench_server.HELLO_APP)
        stats = bpf_stats_enabled() if "traced" not in skip else _nothing()
        with stats:
            for n in range(settings.rounds):
                say(f"round {n + 1}/{settings.rounds}")
                if bench_server is not None:
                    server_round(bench_server, settings, app_dir, found, n)
                if "traced" not in skip:
                    traced_round(settings, found, n)
                if bench_correlator is not None:
                    correlator_round(bench_correlator, records, found, n)
                if "otlp" not in skip:
                    from scripts.bench_otlp import measure as otlp_measure

                    found.otlp_us.append(otlp_measure(requests=1_024, rounds=3))
                    say(f"  otlp       {found.otlp_us[-1]:,.1f} µs of CPU per request")
                if "dashboard" not in skip:
                    dashboard_round(settings, found)
            if "budget" not in skip and found.traced["untraced"]:
                budget_runs(settings, found)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main(argv: Sequence[str] | None = None, shown_argv: Sequence[str] | None = None) -> int:
    from tracer.session.signals import exit_cleanly_on_signals

    args, settings = parse_args(argv)
    json_path = Path(args.json).resolve() if args.json else None
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    skipped = preflight(settings)
    facts = machine_facts(shown_argv or sys.argv)
    if settings.pins[1] is not None:
        os.sched_setaffinity(0, {settings.pins[1]})  # this script stays off the server's CPU
    found = Measurements()
    began = time.monotonic()
    load_average = os.getloadavg()[0]
    ticks = cpu_ticks()
    try:
        with exit_cleanly_on_signals():  # SIGTERM/SIGHUP unwind like Ctrl-C: everything stops
            run_rounds(settings, found)
    except KeyboardInterrupt:
        say("scripts/bench: interrupted; servers, probes, tmux and the demo are stopped")
        return 130
    except SystemExit:
        say("scripts/bench: terminated; servers, probes, tmux and the demo are stopped")
        return 143
    elapsed = time.monotonic() - began
    rows = build_rows(settings, found)
    setup = [
        *setup_lines(settings),
        *skipped,
        f"the whole bench took {elapsed:.0f} s; " + machine_load(ticks, cpu_ticks(), load_average),
    ]
    print()
    print(render(facts, setup, rows))
    if json_path is not None:
        document = as_json(facts, setup, rows, {"settings": asdict(settings), **found.as_dict()})
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        say(f"\nJSON written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], ["scripts/bench", *sys.argv[1:]]))
