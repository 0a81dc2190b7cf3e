"""One `Config` object for the bundled server, and the command-line flags that fill it.

`reqtrace serve` and `reqtrace run` accept the very same server flags, so the flags are
defined once here (`add_server_arguments`) and turned into a `Config` by `config_from_args`.
Flag names follow uvicorn's where uvicorn has one (--host, --port, --uds, --app-dir,
--factory, --root-path, --lifespan, --loop, --timeout-keep-alive, --limit-concurrency, --fd,
--backlog, --log-level, --access-log/--no-access-log, --timeout-graceful-shutdown,
--server-header/--no-server-header, --date-header/--no-date-header) so that people can
swap `uvicorn` for `reqtrace serve` without rereading the manual. The request limits that
uvicorn does not have borrow gunicorn's names (--limit-request-line, --limit-request-fields);
the request-body rate rule borrows Kestrel's idea (MinRequestBodyDataRate, with a grace
period) and Apache mod_reqtimeout's default rate (MinRate=500 bytes/s).

What bounds a client's hold on the server while a request is read:
- head: --limit-request-head bytes, --limit-request-fields fields (431), within
  --timeout-request-header seconds of its first byte, however it trickles (408);
- trailer section (after a chunked body) and each chunk-size line: the same byte and field
  limits, and --timeout-request-header once one spans a read; trailers never reach the app;
- body: no silence longer than --timeout-request-body (408), and on average at least
  --min-request-body-rate bytes/s once --min-request-body-rate-grace seconds have passed,
  i.e. the body must be done by start + grace + bytes/rate (408). Time the server spends
  not reading (the app is slow to take the body, a pipelined response is in flight, or the
  client rightly waits for "100 Continue") is not held against the client.

Like uvicorn's Config, this object is passed everywhere; unlike it, it does no I/O: loading
the app happens in `app_loading`, listening in `main`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

LifespanMode = Literal["auto", "on", "off"]
LoopName = Literal["auto", "asyncio", "uvloop"]
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

ASGIApp = Callable[..., Any]
"""An ASGI 3 application: `async def app(scope, receive, send) -> None`."""


@dataclass
class Config:
    """Everything the server needs to know; defaults are what `reqtrace serve APP` uses."""

    app: str | ASGIApp  # "module:attr" (imported by app_loading) or the app object itself
    host: str = "127.0.0.1"
    port: int = 8000  # 0: pick a free port (read it back from the on_started callback)
    uds: str | None = None  # listen on this unix socket path instead of host/port
    fd: int | None = None  # serve on this inherited, bound socket (uvicorn's --fd); owned after
    app_dir: str = "."  # prepended to sys.path before importing APP (uvicorn's default)
    factory: bool = False  # APP names a zero-argument callable that returns the app
    root_path: str = ""
    lifespan: LifespanMode = "auto"
    loop: LoopName = "auto"
    backlog: int = 2048
    log_level: str = "info"
    access_log: bool = True
    server_header: bool = True
    date_header: bool = True

    # Timeouts, in seconds.
    timeout_keep_alive: float = 5.0  # an idle connection (no request in progress) is closed
    timeout_request_header: float = 10.0  # first byte of a request -> end of its headers
    timeout_request_body: float = 30.0  # longest silence while reading a request body
    min_request_body_rate: float = 500.0  # bytes/s a body must average after the grace; 0: off
    min_request_body_rate_grace: float = 10.0  # seconds of a body before its rate counts
    timeout_graceful_shutdown: float = 10.0  # draining in-flight requests at shutdown

    # Limits: what a client may make the server hold in memory before it says no.
    limit_concurrency: int | None = None  # connections / in-flight requests before 503
    limit_request_line: int = 8190  # request target bytes -> 414 URI Too Long
    limit_request_head: int = 65536  # request line + headers bytes -> 431 (trailers: the same)
    limit_request_fields: int = 100  # number of header fields -> 431 (trailer fields: the same)

    # Timing hooks (see hook_record.py): where the records go when no sink object is given.
    hook_fd: int | None = None  # write end of a pipe from the tracer (hook_channel.py)
    hook_capture_headers: bool = False  # copy request headers into RequestTiming.headers

    def __post_init__(self) -> None:
        if self.lifespan not in ("auto", "on", "off"):
            raise ValueError(f"lifespan must be auto, on or off, not {self.lifespan!r}")
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError(f"loop must be auto, asyncio or uvloop, not {self.loop!r}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")
        for name in (
            "timeout_keep_alive",
            "timeout_request_header",
            "timeout_request_body",
            "min_request_body_rate_grace",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.min_request_body_rate < 0:
            raise ValueError("min_request_body_rate must not be negative (0 turns it off)")
        if self.timeout_graceful_shutdown < 0:
            raise ValueError("timeout_graceful_shutdown must not be negative")
        for name in ("limit_request_line", "limit_request_head", "limit_request_fields"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.limit_concurrency is not None and self.limit_concurrency < 1:
            raise ValueError("limit_concurrency must be at least 1")
        if self.root_path.endswith("/"):
            self.root_path = self.root_path.rstrip("/")


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add APP and the server flags to `parser` (shared by `serve` and `run`)."""
    defaults = Config(app="")
    parser.add_argument("app", metavar="APP", help='the ASGI app as "module:attribute"')
    where = parser.add_argument_group("listening")
    where.add_argument("--host", default=defaults.host, help="bind address (default %(default)s)")
    where.add_argument(
        "--port", type=int, default=defaults.port, help="bind port, 0 for any (default %(default)s)"
    )
    where.add_argument(
        "--uds", metavar="PATH", default=None, help="bind to this unix domain socket instead"
    )
    where.add_argument(
        "--fd",
        metavar="FD",
        type=int,
        default=None,
        help="serve on this inherited, already bound socket file descriptor",
    )
    where.add_argument(
        "--backlog",
        metavar="N",
        type=_positive_int,
        default=defaults.backlog,
        help="listen backlog (default %(default)s)",
    )
    app = parser.add_argument_group("application")
    app.add_argument(
        "--app-dir",
        metavar="DIR",
        default=defaults.app_dir,
        help="directory put first on sys.path to import APP (default: current directory)",
    )
    app.add_argument(
        "--factory", action="store_true", help="APP is a callable that returns the ASGI app"
    )
    app.add_argument(
        "--root-path",
        metavar="PATH",
        default="",
        help="ASGI root_path, when mounted under a prefix",
    )
    app.add_argument(
        "--lifespan",
        choices=("auto", "on", "off"),
        default=defaults.lifespan,
        help="ASGI lifespan protocol (default %(default)s)",
    )
    app.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default=defaults.loop,
        help="event loop; auto picks uvloop when installed (default %(default)s)",
    )
    limits = parser.add_argument_group("timeouts and limits")
    limits.add_argument(
        "--timeout-keep-alive",
        metavar="SECONDS",
        type=_positive_float,
        default=defaults.timeout_keep_alive,
        help="close idle connections after this many seconds (default %(default)s)",
    )
    limits.add_argument(
        "--timeout-request-header",
        metavar="SECONDS",
        type=_positive_float,
        default=defaults.timeout_request_header,
        help="seconds from a request's first byte to the end of its headers (default %(default)s)",
    )
    limits.add_argument(
        "--timeout-request-body",
        metavar="SECONDS",
        type=_positive_float,
        default=defaults.timeout_request_body,
        help="longest silence while reading a request body, seconds (default %(default)s)",
    )
    limits.add_argument(
        "--min-request-body-rate",
        metavar="BYTES_PER_S",
        type=_non_negative_float,
        default=defaults.min_request_body_rate,
        help="a request body must average at least this many bytes/s once the grace is over,"
        " else 408; 0 turns the rule off (default %(default)s)",
    )
    limits.add_argument(
        "--min-request-body-rate-grace",
        metavar="SECONDS",
        type=_positive_float,
        default=defaults.min_request_body_rate_grace,
        help="seconds of a request body before its rate counts (default %(default)s)",
    )
    limits.add_argument(
        "--timeout-graceful-shutdown",
        metavar="SECONDS",
        type=float,
        default=defaults.timeout_graceful_shutdown,
        help="seconds to let in-flight requests finish on shutdown (default %(default)s)",
    )
    limits.add_argument(
        "--limit-concurrency",
        metavar="N",
        type=_positive_int,
        default=None,
        help="answer 503 beyond this many connections or in-flight requests",
    )
    limits.add_argument(
        "--limit-request-line",
        metavar="BYTES",
        type=_positive_int,
        default=defaults.limit_request_line,
        help="longest request target in bytes, else 414 (default %(default)s)",
    )
    limits.add_argument(
        "--limit-request-head",
        metavar="BYTES",
        type=_positive_int,
        default=defaults.limit_request_head,
        help="largest request line + headers (or trailer section) in bytes, else 431"
        " (default %(default)s)",
    )
    limits.add_argument(
        "--limit-request-fields",
        metavar="N",
        type=_positive_int,
        default=defaults.limit_request_fields,
        help="most header (or trailer) fields in a request, else 431 (default %(default)s)",
    )
    logs = parser.add_argument_group("logging and headers")
    logs.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=defaults.log_level,
        help="server log level (default %(default)s)",
    )
    logs.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one line per request on stdout (default on)",
    )
    logs.add_argument(
        "--server-header",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send 'server: reqtrace' (default on)",
    )
    logs.add_argument(
        "--date-header",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send a Date header (default on)",
    )


def add_hook_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that route the timing hooks; `serve` has them, `run` wires hooks itself."""
    hooks = parser.add_argument_group("timing hooks")
    hooks.add_argument(
        "--hook-fd",
        metavar="FD",
        type=int,
        default=None,
        help="write timing records to this inherited pipe fd (see tracer/server/hook_channel.py)",
    )
    hooks.add_argument(
        "--hook-capture-headers",
        action="store_true",
        help="include request headers in the timing records",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the Config from parsed `add_server_arguments` (and optional hook) flags."""
    return Config(
        app=args.app,
        host=args.host,
        port=args.port,
        uds=args.uds,
        fd=getattr(args, "fd", None),
        app_dir=args.app_dir,
        factory=args.factory,
        root_path=args.root_path,
        lifespan=args.lifespan,
        loop=args.loop,
        backlog=args.backlog,
        log_level=args.log_level,
        access_log=args.access_log,
        server_header=args.server_header,
        date_header=args.date_header,
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_request_header=args.timeout_request_header,
        timeout_request_body=args.timeout_request_body,
        min_request_body_rate=args.min_request_body_rate,
        min_request_body_rate_grace=args.min_request_body_rate_grace,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
        limit_concurrency=args.limit_concurrency,
        limit_request_line=args.limit_request_line,
        limit_request_head=args.limit_request_head,
        limit_request_fields=args.limit_request_fields,
        hook_fd=getattr(args, "hook_fd", None),
        hook_capture_headers=getattr(args, "hook_capture_headers", False),
    )
