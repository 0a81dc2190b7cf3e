"""The `reqtrace` command line: parse arguments and hand over to the module that does the job.

Heavy imports (BCC, Textual, the server) happen inside each command, so `reqtrace --help`
and the commands that need no root stay fast and work on machines without BCC.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tracer import __version__

# Every command's home, imported only when that command runs (uvicorn's config.py does the
# same with its protocol and loop tables): `reqtrace --help` stays fast and BCC-free.
COMMANDS: dict[str, str] = {
    "serve": "tracer.commands.serve:serve_command",
    "run": "tracer.commands.run:run_command",
    "demo": "tracer.commands.run:demo_command",
    "attach": "tracer.commands.attach:attach_command",
    "show": "tracer.commands.show:show_command",
    "report": "tracer.commands.report:report_command",
    "explain": "tracer.commands.explain:explain_command",
    "export": "tracer.commands.export:export_command",
    "diff": "tracer.commands.diff:diff_command",
    "doctor": "tracer.commands.doctor:doctor_command",
    "lab": "tracer.lab.cli:run_lab",
}


EXIT_STATUSES = """\
exit status (every command):
  0    done; run, demo and attach: stopped as asked (Ctrl-C, SIGTERM, --duration,
       --max-requests, q)
  1    the app or its server failed (serve, run, demo: the app cannot be imported,
       a crash; 3: the app's lifespan startup failed, as uvicorn; attach: the traced
       server exited); diff --exit-code:
       some stage moved; lab exec/load: the command's own status
  2    cannot do it: bad usage; cannot trace here (not root, no BCC: run, demo,
       doctor); port in use; --record folder missing or file already there;
       unusable --python; a recording that cannot be read; an output that cannot
       be written; lab errors
  130  interrupted (Ctrl-C) before the job was done
"""

RECORDING_HELP = "a recording made with reqtrace run --record (JSON Lines)"

RUN_NOTES = (
    """\
--server uvicorn|gunicorn: the app's own server traces the same stages; its flags are
its own (uvicorn APP --http h11 ..., gunicorn APP -w 2 -k uvicorn.workers.UvicornWorker
...), mixed with reqtrace's tracing flags; anything after -- goes to the server
untouched (gunicorn's own --max-requests, say). reqtrace binds the address itself
(uvicorn --host/--port/--uds, gunicorn --bind) and hands the server the socket.

the app's Python: --python PATH, else the active virtualenv ($VIRTUAL_ENV; sudo keeps
it only with -E), else a .venv or venv folder in --app-dir or the current directory,
else reqtrace's own. The app runs there, as the sudo caller (or --user), with its own
packages, as under uvicorn; httptools must be importable there (reqtrace lends its own
when the Python versions match). Under sudo, call reqtrace by its path:
  sudo "$(command -v reqtrace)" run app:app

"""
    + EXIT_STATUSES
)


ATTACH_NOTES = (
    """\
any server, any language, without restarting it: requests are delimited from its
syscalls (a request is the first read after an answer; its method and path are read from
its first bytes in the kernel), with every kernel stage, recv, send and a `server` stage
(its last read of the request -> its first send). Without reqtrace's hooks inside the
server, parse, loop queue and app cannot be seen (reqtrace run shows them). Only
HTTP/1.x in clear text; a server that exits ends the attach (exit status 1).

"""
    + EXIT_STATUSES
)


def _add_run_arguments(parser: argparse.ArgumentParser, app_python: bool = True) -> None:
    trace = _add_output_arguments(parser)
    trace.add_argument(
        "--user", metavar="NAME", help="run the app as NAME (default: the sudo caller)"
    )
    if app_python:
        trace.add_argument(
            "--python",
            metavar="PATH",
            help="the app's interpreter, or its virtualenv folder (default: see below)",
        )
        trace.add_argument(
            "--server",
            choices=HOSTED_SERVERS,
            default="reqtrace",
            help="serve with reqtrace's server (default), or the app's own uvicorn or"
            " gunicorn (then the other flags are that server's own; see below)",
        )


def _add_output_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """What every tracing command (run, demo, attach) takes alike; the "tracing" group."""
    trace = parser.add_argument_group("tracing")
    trace.add_argument("--record", metavar="FILE", help="write every request to a recording")
    trace.add_argument(
        "--record-raw",
        metavar="FILE",
        help="also write every kernel and hook record, to replay the correlation later",
    )
    trace.add_argument(
        "--force",
        action="store_true",
        help="overwrite the --record/--record-raw files if they exist (refused by default)",
    )
    trace.add_argument("--no-tui", action="store_true", help="log one line per request instead")
    trace.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    trace.add_argument("--max-requests", type=int, metavar="N", help="stop after N requests")
    trace.add_argument(
        "--slower-than",
        type=float,
        metavar="MS",
        help="record only requests slower than MS milliseconds (the rest are counted)",
    )
    trace.add_argument(
        "--no-redact",
        action="store_true",
        help="keep Authorization/Cookie values in recordings (redacted by default)",
    )
    otlp = parser.add_argument_group("OpenTelemetry export (needs reqtrace[otlp])")
    otlp.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="also send every request as spans over OTLP/HTTP, e.g."
        " http://collector:4318/v1/traces (never blocks tracing: drops are counted)",
    )
    _add_otlp_resource_arguments(otlp)
    return trace


def _add_otlp_resource_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--otlp-service-name",
        metavar="NAME",
        help="service.name of the spans (default: $OTEL_SERVICE_NAME, else reqtrace)",
    )
    group.add_argument(
        "--otlp-resource",
        action="append",
        metavar="KEY=VALUE",
        help="a resource attribute of the spans (repeatable), e.g. deployment.environment=staging",
    )


def build_parser() -> argparse.ArgumentParser:
    from tracer.server.config import add_hook_arguments, add_server_arguments

    parser = argparse.ArgumentParser(
        prog="reqtrace",
        description="Follow HTTP requests from the network card to a Python ASGI app and back.",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"reqtrace {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run an ASGI app on the bundled server (no tracing, no root needed)",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_server_arguments(serve)
    add_hook_arguments(serve)

    run = commands.add_parser(
        "run",
        help="serve an ASGI app and trace every request (needs root)",
        epilog=RUN_NOTES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_server_arguments(run)
    _add_run_arguments(run)

    demo = commands.add_parser(
        "demo",
        help="an example app under built-in load, traced live (needs root)",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any)")
    demo.add_argument(
        "--rate", type=float, default=60.0, help="requests per second of load (default %(default)g)"
    )
    demo.add_argument(
        "--connections", type=int, default=4, help="client connections (default %(default)s)"
    )
    _add_run_arguments(demo, app_python=False)

    attach = commands.add_parser(
        "attach",
        help="trace a server that is already running, by pid, from the kernel (needs root)",
        epilog=ATTACH_NOTES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    attach.add_argument(
        "--pid", type=int, required=True, help="the server's process (its children are followed)"
    )
    attach.add_argument(
        "--port",
        type=int,
        action="append",
        metavar="PORT",
        help="the server's port (repeatable; default: every TCP port the process listens on)",
    )
    _add_output_arguments(attach)

    show = commands.add_parser("show", help="open the dashboard on a recording")
    show.add_argument("file", help=RECORDING_HELP)

    report = commands.add_parser("report", help="per-stage breakdown of a recording")
    report.add_argument("file", help=RECORDING_HELP)
    report_format = report.add_mutually_exclusive_group()
    report_format.add_argument("--json", action="store_true", help="machine-readable output")
    report_format.add_argument(
        "--html",
        action="store_true",
        help="one self-contained page (histograms, waterfalls of the slowest requests) to share",
    )
    report.add_argument(
        "-o", "--output", default="-", metavar="OUT", help="write to OUT ('-': stdout, the default)"
    )
    report.add_argument(
        "--by",
        choices=["path", "route", "status"],
        help="also break the stages down per path, route (ids as {id}) or status",
    )
    report.add_argument("--path", metavar="GLOB", help="only requests whose path matches")
    report.add_argument(
        "--slower-than", type=float, metavar="MS", help="only requests slower than MS ms"
    )

    explain = commands.add_parser(
        "explain",
        help="one request's journey as a Markdown handout (teaching text, Mermaid diagram)",
    )
    explain.add_argument("file", help=RECORDING_HELP)
    which = explain.add_mutually_exclusive_group()
    which.add_argument("--request", type=int, metavar="ID", help="the request with this id")
    which.add_argument(
        "--slowest",
        action="store_true",
        help="the slowest complete request (the default)",
    )
    which.add_argument(
        "--path", metavar="GLOB", help="the slowest complete request whose path matches"
    )
    explain.add_argument(
        "-o", "--output", default="-", metavar="OUT", help="write to OUT ('-': stdout, the default)"
    )

    export = commands.add_parser(
        "export", help="convert a recording (Perfetto, plain JSON, OpenTelemetry OTLP)"
    )
    export.add_argument("file", help=RECORDING_HELP)
    export.add_argument("--format", choices=["perfetto", "json", "otlp"], required=True)
    export.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="'-' for stdout; otlp: protobuf, or OTLP/JSON when OUT ends in .json",
    )
    _add_otlp_resource_arguments(export.add_argument_group("otlp"))

    diff = commands.add_parser(
        "diff", help="which stages moved between two recordings, and whether beyond noise"
    )
    diff.add_argument("a", metavar="A", help="the recording before (baseline)")
    diff.add_argument("b", metavar="B", help="the recording after")
    diff.add_argument(
        "--by", choices=["path", "route", "status"], help="also compare per path, route or status"
    )
    diff.add_argument("--path", metavar="GLOB", help="only requests whose path matches")
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    diff.add_argument(
        "--alpha",
        type=float,
        default=0.01,
        help="significance level of the Mann-Whitney U tests, Holm-corrected (default 0.01)",
    )
    diff.add_argument(
        "--min-change",
        type=float,
        default=10.0,
        metavar="PCT",
        help="smallest relative change of the median that counts as a move (default 10%%)",
    )
    diff.add_argument(
        "--min-us",
        type=float,
        default=20.0,
        metavar="US",
        help="smallest change of the median in µs that counts as a move (default 20)",
    )
    diff.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 1 when some stage moved significantly (for scripts and CI)",
    )

    doctor = commands.add_parser(
        "doctor", help="check kernel, BCC, headers, privileges and the probe plan"
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument(
        "--ebpf", action="store_true", help="print the BPF program the plan compiles, and exit"
    )

    from tracer.lab.cli import add_lab_parser

    add_lab_parser(commands)
    return parser


# Commands that load BPF: the distribution's BCC is found even from a user's virtualenv.
NEEDS_BCC = frozenset({"run", "demo", "attach", "doctor", "lab"})


HOSTED_SERVERS = ("reqtrace", "uvicorn", "gunicorn")


def hosted_run_arguments(arguments: list[str]) -> argparse.Namespace | None:
    """`run --server uvicorn|gunicorn ...`: reqtrace's tracing flags, and the rest (the
    server's own flags and APP, in order) as `server_args`; None for any other command."""
    if arguments[:1] != ["run"]:
        return None
    words = arguments[1:]
    ours, theirs = words, []
    if "--" in words:
        split = words.index("--")
        ours, theirs = words[:split], words[split + 1 :]
    server = ""
    for i, word in enumerate(ours):
        if word == "--server" and i + 1 < len(ours):
            server = ours[i + 1]
        elif word.startswith("--server="):
            server = word.partition("=")[2]
    if server not in HOSTED_SERVERS[1:] or {"-h", "--help"} & set(ours):
        return None  # reqtrace run's own help says what --server takes
    parser = argparse.ArgumentParser(
        prog=f"reqtrace run --server {server}", add_help=False, allow_abbrev=False
    )
    _add_run_arguments(parser)
    args, extras = parser.parse_known_args(ours)
    args.command = "run"
    args.server_args = [*extras, *theirs]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = hosted_run_arguments(arguments) or build_parser().parse_args(arguments)
    module_name, _, function_name = COMMANDS[args.command].partition(":")
    if args.command in NEEDS_BCC:
        from tracer.session.bcc_path import lend_system_bcc

        lend_system_bcc()
    try:
        command = getattr(importlib.import_module(module_name), function_name)
        return int(command(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
