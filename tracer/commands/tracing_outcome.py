"""What `reqtrace run`, `demo` and `attach` share on the command line: the output options
they take alike, the headless wait, and how the end of a tracing session is told (its
final line, the report of a headless session, where the recording went)."""

from __future__ import annotations

import sys
from typing import Any, Protocol

from tracer.recording.export import parse_resource_attributes
from tracer.recording.reader import Recording
from tracer.session.run_session import plural
from tracer.session.signals import StopRequest


class Stoppable(Protocol):
    stop: StopRequest

    def should_stop(self) -> str: ...


class Outcome(Protocol):
    """What RunResult and AttachResult both count."""

    requests: int
    recorded: int
    skipped_fast: int
    lost_records: dict[str, int]
    otlp_exported: int | None
    otlp_dropped: int | None


def output_options(args: Any) -> dict[str, Any]:
    """The session options every tracing command takes, from the parsed flags (keyword
    arguments of RunOptions and AttachOptions); ValueError names a bad --otlp-resource."""
    return {
        "record": args.record,
        "record_raw": args.record_raw,
        "force": args.force,
        "no_tui": args.no_tui or not sys.stdout.isatty(),
        "duration": args.duration,
        "max_requests": args.max_requests,
        "slower_than_ms": args.slower_than,
        "redact": not args.no_redact,
        "otlp_endpoint": args.otlp_endpoint,
        "otlp_service_name": args.otlp_service_name,
        "otlp_resource": parse_resource_attributes(args.otlp_resource or []),
    }


def wait_headless(session: Stoppable) -> None:
    """--no-tui: wait for a signal, --duration, --max-requests or the server's exit."""
    while True:
        reason = session.should_stop()
        if reason:
            if reason != "stopped":
                session.stop.request(reason)
            return
        session.stop.wait(0.1)


def describe_exit(result: Outcome) -> str:
    """The final line: requests traced, records lost, recorded, exported."""
    lost = sum(result.lost_records.values())
    parts = [f"{plural(result.requests, 'request')} traced", f"{plural(lost, 'record')} lost"]
    if result.recorded or result.skipped_fast:
        parts.append(f"{result.recorded:,} recorded")
    if result.skipped_fast:
        parts.append(f"{result.skipped_fast:,} faster ones only counted")
    if result.otlp_exported is not None:
        parts.append(f"{result.otlp_exported:,} exported over OTLP")
        parts.append(f"{result.otlp_dropped or 0:,} OTLP drops")
    return "reqtrace: " + ", ".join(parts)


def print_report(recording: Recording) -> None:
    """The per-stage report a headless session ends with (on stderr)."""
    from rich.console import Console

    from tracer.recording.report import build_report, render_report

    render_report(build_report(recording), Console(stderr=True))


def print_otlp_warnings(warnings: list[str]) -> None:
    """The exporter's warnings, which the dashboard kept off the terminal while it ran."""
    for line in warnings:
        print(line, file=sys.stderr)
