"""`reqtrace show FILE`: the dashboard on a recording (dashboards/show.py).

The dashboard needs a terminal. When standard output is not one (a pipe, a file, a CI log),
the recording's text report is printed instead, without escape codes.
"""

from __future__ import annotations

import argparse
import sys


def show_command(args: argparse.Namespace) -> int:
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        from tracer.commands.report import run_report

        print(
            "reqtrace show: not a terminal, so no dashboard: the text report instead"
            " (reqtrace report FILE)",
            file=sys.stderr,
        )
        return run_report(args.file, as_json=False)
    from dashboards.show import run_show

    return run_show(args.file)
