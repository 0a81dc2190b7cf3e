"""Logging for the server: errors to stderr, access lines to stdout (uvicorn's split).

Two loggers: "reqtrace.server" (lifecycle, warnings, app exceptions) and "reqtrace.access"
(one line per request). Handlers are only added to a logger that has none, so a caller that
routes these loggers elsewhere first (`reqtrace run`, tests) keeps its own setup.
"""

from __future__ import annotations

import logging
import sys

TRACE = 5  # uvicorn's extra level below DEBUG; accepted for --log-level compatibility
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}


class _PaddedLevelFormatter(logging.Formatter):
    """`INFO:     message`, like uvicorn, so the two servers' logs read the same."""

    def format(self, record: logging.LogRecord) -> str:
        record.levelprefix = f"{record.levelname}:".ljust(9)
        return super().format(record)


def configure_logging(log_level: str, access_log: bool) -> None:
    level = _LEVELS[log_level.lower()]
    formatter = _PaddedLevelFormatter("%(levelprefix)s %(message)s")
    server = logging.getLogger("reqtrace.server")
    if not server.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        server.addHandler(handler)
        server.propagate = False
    server.setLevel(level)
    access = logging.getLogger("reqtrace.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(formatter)
        access.addHandler(handler)
        access.propagate = False
    access.setLevel(level if access_log else logging.CRITICAL + 1)
