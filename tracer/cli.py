"""The `reqtrace` command line: parse arguments and hand over to the module that does the job.

Heavy imports (BCC, Textual, the server) happen inside each command, so `reqtrace --help`
and the commands that need no root stay fast and work on machines without BCC.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tracer import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reqtrace",
        description="Follow HTTP requests from the network card to a Python ASGI app and back.",
    )
    parser.add_argument("--version", action="version", version=f"reqtrace {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    doctor = commands.add_parser(
        "doctor", help="check kernel, BCC, headers, privileges and the probe plan"
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    from tracer.server.config import add_hook_arguments, add_server_arguments

    serve = commands.add_parser(
        "serve", help="run an ASGI app on the bundled server (no tracing, no root needed)"
    )
    add_server_arguments(serve)
    add_hook_arguments(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "doctor":
            from tracer.doctor import run_doctor

            return run_doctor(args.json)
        if args.command == "serve":
            from tracer.server.config import config_from_args
            from tracer.server.main import serve

            return serve(config_from_args(args))
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
