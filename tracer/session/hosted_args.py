"""What the tracer reads from the command line of the user's own server (--server uvicorn or
gunicorn): the address to bind, the app, the flags it cannot trace with.

The flags themselves are the server's: the child hands them to uvicorn's or gunicorn's own
parser (tracer/hosted/). The tracer only peeks at the few it must know before the child
starts, with each server's own defaults: it binds the address itself (so the probe filters
are armed before the first connection), and serves it to the server as an inherited socket.

    uvicorn   APP --host H --port P | --uds PATH, --app-dir, --backlog,
              --timeout-graceful-shutdown; refused: --reload, --workers N>1, --fd
    gunicorn  APP -b/--bind H:P | unix:PATH (one), --chdir, --backlog, --graceful-timeout,
              -k/--worker-class (uvicorn's workers only; the default is UvicornWorker)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

from tracer.server.config import Config

SERVERS = ("reqtrace", "uvicorn", "gunicorn")
UVICORN_WORKERS = {
    "uvicorn.workers.UvicornWorker": "httptools",
    "uvicorn.workers.UvicornH11Worker": "h11",
    "uvicorn_worker.UvicornWorker": "httptools",
    "uvicorn_worker.UvicornH11Worker": "h11",
}
DEFAULT_WORKER = "uvicorn.workers.UvicornWorker"
MAX_GUNICORN_WORKERS = 7


class HostedArgsError(ValueError):
    """The server's flags cannot be traced as given; the message says what to change."""


@dataclass(frozen=True)
class HostedServer:
    kind: str  # "uvicorn" | "gunicorn"
    argv: list[str]  # its own flags, as given (the child replaces the address)
    app: str
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    app_dir: str = "."
    backlog: int = 2048
    graceful_s: float = 30.0  # how long the tracer lets requests in flight finish
    notes: list[str] = field(default_factory=list)  # said once the run starts

    def config(self) -> Config:
        """The tracer's view of the address and app (the listener, the header, the stop)."""
        return Config(
            app=self.app,
            host=self.host,
            port=self.port,
            uds=self.uds,
            app_dir=self.app_dir,
            backlog=self.backlog,
            timeout_graceful_shutdown=self.graceful_s,
        )


def _peek(
    argv: Sequence[str], options: list[tuple[list[str], dict[str, object]]]
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for names, kwargs in options:
        parser.add_argument(*names, **kwargs)  # type: ignore[arg-type]
    try:
        known, _ = parser.parse_known_args(list(argv))
    except SystemExit:  # a peeked flag without its value: the server's parser will say so
        known = parser.parse_known_args([])[0]
    return known


def _app_of(argv: Sequence[str]) -> str:
    """The app argument: the first word like module:attr (else the last bare word)."""
    words = [arg for arg in argv if not arg.startswith("-")]
    for word in words:
        if ":" in word and "/" not in word:
            return word
    return words[-1] if words else ""


def hosted_server(kind: str, argv: Sequence[str]) -> HostedServer:
    if kind == "uvicorn":
        return _uvicorn(list(argv))
    if kind == "gunicorn":
        return _gunicorn(list(argv))
    raise HostedArgsError(f"--server must be one of {', '.join(SERVERS)}, not {kind!r}")


def _uvicorn(argv: list[str]) -> HostedServer:
    known = _peek(
        argv,
        [
            (["--host"], {"default": "127.0.0.1"}),
            (["--port"], {"type": int, "default": 8000}),
            (["--uds"], {"default": None}),
            (["--fd"], {"default": None}),
            (["--app-dir"], {"default": "."}),
            (["--backlog"], {"type": int, "default": 2048}),
            (["--timeout-graceful-shutdown"], {"type": float, "default": None}),
            (["--workers"], {"type": int, "default": None}),
            (["--reload"], {"action": "store_true"}),
        ],
    )
    if known.reload or (known.workers or 1) > 1:
        raise HostedArgsError(
            "--server uvicorn traces one uvicorn process: --reload and --workers are not"
            " supported (for several workers: --server gunicorn -w N -k"
            " uvicorn.workers.UvicornWorker)"
        )
    if known.fd is not None:
        raise HostedArgsError(
            "--server uvicorn: leave out --fd; reqtrace binds --host/--port (or --uds) itself"
        )
    app = _app_of(argv)
    if not app:
        raise HostedArgsError("--server uvicorn: give the app, as uvicorn takes it (module:attr)")
    graceful = known.timeout_graceful_shutdown
    return HostedServer(
        "uvicorn",
        argv,
        app,
        host=known.host,
        port=known.port,
        uds=known.uds,
        app_dir=known.app_dir,
        backlog=known.backlog,
        graceful_s=30.0 if graceful is None else graceful,
    )


def parse_bind(bind: str) -> tuple[str, int, str | None]:
    """gunicorn's --bind: HOST:PORT, [V6]:PORT, HOST (port 8000), unix:PATH."""
    if bind.startswith("unix:"):
        return "", 0, bind.removeprefix("unix:")
    if bind.startswith("fd://"):
        raise HostedArgsError("--server gunicorn: leave out fd:// binds; reqtrace binds itself")
    bind = bind.removeprefix("tcp://")
    if bind.startswith("["):
        host, _, rest = bind[1:].partition("]")
        port = rest.removeprefix(":")
    elif bind.count(":") == 1:
        host, _, port = bind.partition(":")
    else:
        host, port = bind, ""
    try:
        return host or "0.0.0.0", int(port) if port else 8000, None
    except ValueError:
        raise HostedArgsError(f"--server gunicorn: cannot read --bind {bind!r}") from None


def _gunicorn(argv: list[str]) -> HostedServer:
    known = _peek(
        argv,
        [
            (["-b", "--bind"], {"action": "append", "default": None}),
            (["--chdir"], {"default": "."}),
            (["--backlog"], {"type": int, "default": 2048}),
            (["--graceful-timeout"], {"type": float, "default": 30.0}),
            (["-k", "--worker-class"], {"default": None}),
            (["--reload"], {"action": "store_true"}),
            (["-c", "--config"], {"default": None}),
            (["-w", "--workers"], {"type": int, "default": 1}),
        ],
    )
    if known.workers > MAX_GUNICORN_WORKERS:
        raise HostedArgsError(
            f"--server gunicorn: reqtrace follows at most {MAX_GUNICORN_WORKERS} workers"
            " (the probes' process filter holds 8 processes with the master)"
        )
    binds = known.bind or ["127.0.0.1:8000"]
    if len(binds) > 1:
        raise HostedArgsError("--server gunicorn: give one --bind address (reqtrace binds it)")
    if known.reload:
        raise HostedArgsError("--server gunicorn: --reload is not supported under reqtrace")
    notes = []
    if known.worker_class is None:
        notes.append(f"gunicorn's workers: {DEFAULT_WORKER} (no -k given)")
    elif known.worker_class not in UVICORN_WORKERS:
        raise HostedArgsError(
            f"--server gunicorn: -k {known.worker_class} is not one of uvicorn's workers;"
            f" reqtrace traces ASGI apps under {', '.join(sorted(UVICORN_WORKERS))}"
        )
    if known.config:
        notes.append("gunicorn's --config file is read, but its bind and worker_class are not")
    host, port, uds = parse_bind(binds[0])
    app = _app_of(argv)
    if not app:
        raise HostedArgsError("--server gunicorn: give the app, as gunicorn takes it (module:attr)")
    return HostedServer(
        "gunicorn",
        argv,
        app,
        host=host,
        port=port,
        uds=uds,
        app_dir=known.chdir,
        backlog=known.backlog,
        graceful_s=known.graceful_timeout,
        notes=notes,
    )
