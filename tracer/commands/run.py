"""`reqtrace run APP` and `reqtrace demo`: options from the command line, a RunSession, and
how its outcome is told (dashboard or headless log, final report, exit status).

The session itself (tracer/session/run_session.py) knows nothing of argparse or of the
dashboard; this module chooses how to wait for it: the live dashboard or `wait_headless`.
Exit statuses (the same for every command; `reqtrace --help` lists them): 0 the run ended
as asked, 1 the app or its server failed (3: its lifespan startup failed, as with `serve`),
2 bad usage or cannot trace here, 130 interrupted before the server served.
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
from tracer.session.progress import own_stderr
from tracer.session.run_session import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_USAGE,
    RunError,
    RunOptions,
    RunSession,
    server_log_tail,
)
from tracer.session.signals import stop_on_signals
from tracer.session.view import SessionView

DEMO_APP = "tracer.demo.app:app"


def options_from_args(args: Any) -> RunOptions:
    """RunOptions from the parsed flags; ValueError names a bad --otlp-resource."""
    return RunOptions(**output_options(args), user=args.user, python=getattr(args, "python", None))


def execute(session: RunSession) -> int:
    """Run a prepared session with the dashboard or headless; print the outcome."""
    options = session.options
    if options.no_tui:
        wait: Callable[[RunSession], None] = wait_headless
    else:
        from dashboards.live import new_live_feed, run_dashboard

        feed = new_live_feed(str(session.config.app))
        session.extra_sinks.append(feed.put)

        def wait(running: RunSession) -> None:
            run_dashboard(SessionView(running), feed)

    try:
        result = session.run(wait)
    except RunError as exc:
        if not exc.shown:
            print(f"reqtrace: {exc}", file=sys.stderr)
        return exc.exit_code
    otlp = session.outputs.otlp
    if not options.no_tui and otlp is not None:  # not shown under the dashboard
        print_otlp_warnings(otlp.warnings)
    print(describe_exit(result), file=sys.stderr)
    if result.child_exited_by_itself:
        print(f"reqtrace: {result.stop_reason}", file=sys.stderr)
        tail = server_log_tail(result.server_log)
        if tail:
            print(f"the server's last log lines ({result.server_log}):\n{tail}", file=sys.stderr)
    if options.no_tui and result.requests:
        print_report(session.final_recording())
    if options.record:
        print(f"reqtrace: recording written to {options.record}", file=sys.stderr)
    if result.child_exited_by_itself:
        return EXIT_SERVER
    if not result.child_served and session.stop.is_set():
        return EXIT_INTERRUPTED
    return EXIT_OK


def run_command(args: Any) -> int:
    """`reqtrace run APP ...` (args from the CLI parser)."""
    from tracer.server.config import config_from_args

    try:
        server = getattr(args, "server", "reqtrace")
        if server != "reqtrace":  # the app's own uvicorn or gunicorn, with its own flags
            from tracer.session.hosted_args import hosted_server

            hosted = hosted_server(server, args.server_args)
            config = hosted.config()
        else:
            hosted = None
            config = config_from_args(args)
        options = options_from_args(args)
        options.hosted = hosted
    except ValueError as exc:
        print(f"reqtrace: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return prepare_and_execute(RunSession(config, options))


def prepare_and_execute(
    session: RunSession, when_prepared: Callable[[RunSession], None] | None = None
) -> int:
    """The whole run, with Ctrl-C/SIGTERM/SIGHUP turned into a stop request from the start."""
    with stop_on_signals(session.stop), own_stderr():
        try:
            session.prepare()
        except RunError as exc:
            session.abandon()
            if not exc.shown:
                print(f"reqtrace: {exc}", file=sys.stderr)
            return exc.exit_code
        if when_prepared is not None:
            when_prepared(session)
        return execute(session)


def demo_command(args: Any) -> int:
    """`reqtrace demo`: the demo app under the built-in, bounded load generator."""
    from tracer.server.config import Config

    config = Config(
        app=DEMO_APP, host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )
    try:
        options = options_from_args(args)
    except ValueError as exc:
        print(f"reqtrace: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options.find_app_python = False  # the demo app needs nothing but reqtrace itself

    def add_load(session: RunSession) -> None:  # the port is known once prepared
        options.demo_load = [
            sys.executable,
            "-m",
            "tracer.demo.load",
            "--port",
            str(session.port),
            "--rate",
            str(args.rate),
            "--connections",
            str(args.connections),
            "--duration",
            str(args.duration or 600.0),
            "--max-requests",
            str(args.max_requests or 200_000),
        ]

    return prepare_and_execute(RunSession(config, options), add_load)
