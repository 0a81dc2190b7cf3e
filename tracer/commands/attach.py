"""`reqtrace attach --pid PID [--port PORT]`: options from the command line, an
AttachSession (tracer/session/attach_session.py), the dashboard or the headless log, and
how it ended.

Exit statuses (the same scheme as every command): 0 stopped as asked (Ctrl-C, SIGTERM,
--duration, --max-requests, q), 1 the traced server exited meanwhile, 2 bad usage or
cannot trace here (no such process, no listening port, not root), 130 interrupted before
the probes were attached.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tracer.session.attach_session import (
    EXIT_OK,
    AttachError,
    AttachOptions,
    AttachResult,
    AttachSession,
)
from tracer.session.progress import own_stderr
from tracer.session.signals import stop_on_signals

EXIT_SERVER_GONE = 1


def wait_headless(session: AttachSession) -> None:
    """--no-tui: wait for a signal, --duration, --max-requests or the target's exit."""
    while True:
        reason = session.should_stop()
        if reason:
            if reason != "stopped":
                session.stop.request(reason)
            return
        session.stop.wait(0.1)


def describe_exit(result: AttachResult) -> str:
    lost = sum(result.lost_records.values())
    parts = [
        f"{result.requests:,} request{'s' if result.requests != 1 else ''} traced",
        f"{lost:,} record{'s' if lost != 1 else ''} lost",
    ]
    if result.recorded:
        parts.append(f"{result.recorded:,} recorded")
    return "reqtrace: " + ", ".join(parts)


def options_from_args(args: Any) -> AttachOptions:
    return AttachOptions(
        pid=args.pid,
        ports=tuple(args.port or ()),
        record=args.record,
        force=args.force,
        no_tui=args.no_tui or not sys.stdout.isatty(),
        duration=args.duration,
        max_requests=args.max_requests,
        redact=not args.no_redact,
    )


def attach_command(args: Any) -> int:
    """`reqtrace attach --pid PID ...` (args from the CLI parser)."""
    options = options_from_args(args)
    session = AttachSession(options)
    with stop_on_signals(session.stop), own_stderr():
        try:
            session.prepare()
        except AttachError as exc:
            print(f"reqtrace: {exc}", file=sys.stderr)
            return exc.exit_code
        wait: Callable[[AttachSession], None] = wait_headless
        if not options.no_tui:
            from dashboards.live import new_live_feed, run_dashboard
            from tracer.session.view import AttachView

            feed = new_live_feed(session.server)
            session.extra_sinks.append(feed.put)

            def wait(running: AttachSession) -> None:
                run_dashboard(AttachView(running), feed)

        try:
            result = session.run(wait)
        except AttachError as exc:
            print(f"reqtrace: {exc}", file=sys.stderr)
            return exc.exit_code
    print(describe_exit(result), file=sys.stderr)
    if result.target_exited:
        print(f"reqtrace: {result.stop_reason}", file=sys.stderr)
    if options.no_tui and result.requests:
        from rich.console import Console

        from tracer.recording.report import build_report, render_report

        render_report(build_report(session.final_recording()), Console(stderr=True))
    if options.record:
        print(f"reqtrace: recording written to {options.record}", file=sys.stderr)
    return EXIT_SERVER_GONE if result.target_exited else EXIT_OK
