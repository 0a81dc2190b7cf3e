"""The server: load the app, run lifespan, listen, serve, and shut down gracefully.

`serve(config, hook_sink, on_started)` is the entry point for `reqtrace serve` and for the
server child of `reqtrace run`: it blocks until SIGINT/SIGTERM (or `Server.request_shutdown`)
and returns the process exit code:

    0  stopped after a signal or request_shutdown()
    1  the app could not be imported, or the address could not be bound
    3  the app's lifespan startup failed (uvicorn's code)

Shutdown: stop accepting; close idle connections; let requests in flight finish (their
connections close after the response) for up to --timeout-graceful-shutdown seconds; then
cancel what is left; then lifespan shutdown; then close the hook sink. A second signal
skips the waiting.

`on_started(ServerInfo)` is called once the sockets listen, before any request is served:
`run` reads the port (to filter probes), the pid and the loop thread's tid from it.
`on_app_loaded()` is awaited right after the app is imported, before lifespan startup: the
server child of `run` reports the import there and waits for the tracer's go (it returns
None to go on, or the exit code to stop with). `on_stop_accepting(connections)` is called
at shutdown once the listening sockets are closed, before the drain, with the number of
connections still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tracer.server.app_loading import AppLoadError, load_app
from tracer.server.config import Config
from tracer.server.hooks import KIND_SERVER_STARTED, HookSink, wire_emitter
from tracer.server.lifespan import STARTUP_FAILURE_EXIT_CODE, Lifespan
from tracer.server.log_setup import configure_logging
from tracer.server.protocol import HttpProtocol
from tracer.server.state import ServerState

logger = logging.getLogger("reqtrace.server")


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening socket of the server."""

    fd: int
    family: str  # "tcp4" | "tcp6" | "unix"
    address: tuple[str, int] | str  # (host, port), or the unix socket path


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What a supervisor needs once the server listens (given to `on_started`)."""

    pid: int
    tid: int  # native id of the event-loop thread (the thread the probes will see)
    loop: str  # "uvloop" | "asyncio"
    listeners: tuple[Listener, ...]

    @property
    def port(self) -> int | None:
        """The first TCP listening port (the one to filter probes on)."""
        for listener in self.listeners:
            if isinstance(listener.address, tuple):
                return listener.address[1]
        return None

    @property
    def url(self) -> str:
        listener = self.listeners[0]
        if isinstance(listener.address, str):
            return f"http+unix://{listener.address}"
        host, port = listener.address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"


def new_event_loop(name: str) -> tuple[asyncio.AbstractEventLoop, str]:
    """The loop for --loop NAME; "auto" means uvloop when it is installed."""
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise RuntimeError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop(), "uvloop"
    return asyncio.new_event_loop(), "asyncio"


class Server:
    """One server instance; `run()` blocks in the calling thread until it stops."""

    def __init__(
        self,
        config: Config,
        hook_sink: HookSink | None = None,
        on_started: Callable[[ServerInfo], None] | None = None,
        on_app_loaded: Callable[[], Awaitable[int | None]] | None = None,
        on_stop_accepting: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.hook_sink = hook_sink
        self.on_started = on_started
        self.on_app_loaded = on_app_loaded
        self.on_stop_accepting = on_stop_accepting
        self.load_error: AppLoadError | None = None  # why the app could not be loaded
        self.info: ServerInfo | None = None
        self.state: ServerState | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self._force = False
        self._stop_requested = False
        self._created_uds: str | None = None  # a socket file this server made (and removes)
        self._lock = threading.Lock()

    # Running ----------------------------------------------------------------------------
    def run(self, install_signal_handlers: bool = False) -> int:
        """Serve until stopped; returns the exit code (see the module docstring)."""
        try:
            loop, loop_name = new_event_loop(self.config.loop)
        except RuntimeError as exc:
            logger.error("%s", exc)
            return 1
        asyncio.set_event_loop(loop)
        try:
            if install_signal_handlers:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(signum, self._on_signal, signum)
            return loop.run_until_complete(self._main(loop, loop_name))
        finally:
            if install_signal_handlers:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)

    def request_shutdown(self, force: bool = False) -> None:
        """Ask the server to stop, from any thread; `force` skips the graceful wait."""
        with self._lock:
            self._stop_requested = True
            self._force = self._force or force
            loop = self._loop
        if loop is not None and not loop.is_closed():
            # RuntimeError: the loop closed meanwhile, so there is nothing left to stop.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_stop)

    def _on_signal(self, signum: int) -> None:
        if self._stop_requested:
            logger.warning("Second %s: not waiting for requests in flight.", _signame(signum))
            self.request_shutdown(force=True)
        else:
            logger.info("Shutting down (%s).", _signame(signum))
            self.request_shutdown()

    def _wake_stop(self) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    async def _main(self, loop: asyncio.AbstractEventLoop, loop_name: str) -> int:
        config = self.config
        logger.info("Started server process [%d]", os.getpid())
        try:
            app = load_app(config)
        except AppLoadError as exc:
            self.load_error = exc
            logger.error("Error loading ASGI app: %s", exc)
            if exc.detail:
                logger.error("%s", exc.detail)
            return 1
        if self.on_app_loaded is not None:
            code = await self.on_app_loaded()
            if code is not None:
                return code
        emit = None
        sink = self.hook_sink
        if sink is None and config.hook_fd is not None:
            from tracer.server.hook_channel import HookChannelWriter

            sink = self.hook_sink = HookChannelWriter(config.hook_fd)
        if sink is not None:
            emit = wire_emitter(sink)
        lifespan = Lifespan(app, config.lifespan, {})
        state = self.state = ServerState(config, app, lifespan.state, emit)
        state.tid = threading.get_native_id()
        with self._lock:
            self._loop = loop
            self._stop = loop.create_future()
            if self._stop_requested:
                self._stop.set_result(None)
        try:
            if not await lifespan.startup():
                return STARTUP_FAILURE_EXIT_CODE
            try:
                servers = await self._listen(loop, state)
            except OSError as exc:
                logger.error("Could not listen: %s", exc)
                await lifespan.shutdown(config.timeout_graceful_shutdown)
                return 1
            if emit is not None:  # connections queued while the app started wait until now
                emit((KIND_SERVER_STARTED, state.pid, state.tid, time.monotonic_ns()))
            self.info = ServerInfo(
                pid=state.pid, tid=state.tid, loop=loop_name, listeners=_listeners(servers)
            )
            logger.info("Listening on %s (Press CTRL+C to quit)", self.info.url)
            ticker = _DateTicker(loop, state)
            if self.on_started is not None:
                self.on_started(self.info)
            await self._stop
            ticker.cancel()
            await self._shutdown(servers, state)
            await lifespan.shutdown(config.timeout_graceful_shutdown)
            logger.info("Finished server process [%d]", state.pid)
            return 0
        finally:
            close = getattr(sink, "close", None)
            if callable(close):
                close()

    async def _listen(
        self, loop: asyncio.AbstractEventLoop, state: ServerState
    ) -> list[asyncio.Server]:
        config = self.config

        def protocol_factory() -> HttpProtocol:
            return HttpProtocol(state, loop)

        if config.fd is not None:  # made by a supervisor (`reqtrace run`), already bound
            sock = socket.socket(fileno=config.fd)
            if sock.family == socket.AF_UNIX:
                server = await loop.create_unix_server(
                    protocol_factory, sock=sock, backlog=config.backlog
                )
            else:
                server = await loop.create_server(
                    protocol_factory, sock=sock, backlog=config.backlog
                )
        elif config.uds:
            server = await loop.create_unix_server(
                protocol_factory, path=config.uds, backlog=config.backlog
            )
            os.chmod(config.uds, 0o666)
            self._created_uds = config.uds
        else:
            server = await loop.create_server(
                protocol_factory,
                host=config.host,
                port=config.port,
                backlog=config.backlog,
                reuse_address=True,
            )
        return [server]

    async def _shutdown(self, servers: list[asyncio.Server], state: ServerState) -> None:
        state.shutting_down = True
        for server in servers:
            server.close()
        if self.on_stop_accepting is not None:
            self.on_stop_accepting(len(state.connections))
        for connection in list(state.connections):
            connection.shutdown()
        deadline = time.monotonic() + self.config.timeout_graceful_shutdown
        if state.connections and not self._force:
            logger.info("Waiting for %d connection(s) to finish.", len(state.connections))
        while state.connections and not self._force and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if state.connections:
            logger.warning(
                "Cancelling %d connection(s) still busy after the graceful timeout.",
                len(state.connections),
            )
            for connection in list(state.connections):
                connection.abort()
            give_up = time.monotonic() + 1.0
            while state.connections and time.monotonic() < give_up:
                await asyncio.sleep(0.01)
        if self._created_uds:
            with contextlib.suppress(OSError):
                os.unlink(self._created_uds)


class _DateTicker:
    """Refreshes the Date header once a second, on the second."""

    def __init__(self, loop: asyncio.AbstractEventLoop, state: ServerState) -> None:
        self._loop = loop
        self._state = state
        self._handle = loop.call_later(self._delay(), self._tick)

    @staticmethod
    def _delay() -> float:
        return 1.0 - (time.time() % 1.0) + 0.001

    def _tick(self) -> None:
        self._state.refresh_default_head()
        self._handle = self._loop.call_later(self._delay(), self._tick)

    def cancel(self) -> None:
        self._handle.cancel()


def _listeners(servers: list[asyncio.Server]) -> tuple[Listener, ...]:
    listeners = []
    for server in servers:
        for sock in server.sockets:
            address: Any = sock.getsockname()
            if sock.family == socket.AF_UNIX:
                listeners.append(Listener(sock.fileno(), "unix", str(address)))
            else:
                family = "tcp6" if sock.family == socket.AF_INET6 else "tcp4"
                listeners.append(Listener(sock.fileno(), family, (address[0], address[1])))
    return tuple(listeners)


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def serve(
    config: Config,
    hook_sink: HookSink | None = None,
    on_started: Callable[[ServerInfo], None] | None = None,
) -> int:
    """Run the server in this (main) thread until SIGINT/SIGTERM; return the exit code."""
    configure_logging(config.log_level, config.access_log)
    server = Server(config, hook_sink=hook_sink, on_started=on_started)
    install = threading.current_thread() is threading.main_thread()
    return server.run(install_signal_handlers=install)
