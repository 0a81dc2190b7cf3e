"""`reqtrace show FILE`: the dashboard on a recording (dashboards/show.py)."""

from __future__ import annotations

import argparse

from dashboards.show import run_show


def show_command(args: argparse.Namespace) -> int:
    return run_show(args.file)
