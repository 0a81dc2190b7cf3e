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

from tracer.commands.tracing_outcome import (
    describe_exit,
    output_options,
    print_otlp_warnings,
    print_report,
    wait_headless,
)
from tracer.session.attach_session import (
    EXIT_OK,
    EXIT_USAGE,
    AttachError,
    AttachOptions,
    AttachSession,
)
from tracer.session.progress import own_stderr
from tracer.session.signals import stop_on_signals

EXIT_SERVER_GONE = 1


def options_from_args(args: Any) -> AttachOptions:
    """AttachOptions from the parsed flags; ValueError names a bad --otlp-resource."""
    return AttachOptions(pid=args.pid, ports=tuple(args.port or ()), **output_options(args))


def attach_command(args: Any) -> int:
    """`reqtrace attach --pid PID ...` (args from the CLI parser)."""
    try:
        options = options_from_args(args)
    except ValueError as exc:
        print(f"reqtrace: {exc}", file=sys.stderr)
        return EXIT_USAGE
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
    otlp = session.outputs.otlp
    if not options.no_tui and otlp is not None:  # not shown under the dashboard
        print_otlp_warnings(otlp.warnings)
    print(describe_exit(result), file=sys.stderr)
    if result.target_exited:
        print(f"reqtrace: {result.stop_reason}", file=sys.stderr)
    if options.no_tui and result.requests:
        print_report(session.final_recording())
    if options.record:
        print(f"reqtrace: recording written to {options.record}", file=sys.stderr)
    return EXIT_SERVER_GONE if result.target_exited else EXIT_OK
