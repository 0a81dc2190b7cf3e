"""`reqtrace serve APP`: the bundled server, no tracing, no root (tracer/server/main.py)."""

from __future__ import annotations

import argparse

from tracer.server.config import config_from_args
from tracer.server.main import serve


def serve_command(args: argparse.Namespace) -> int:
    return serve(config_from_args(args))
