"""Helpers and fixtures for the server tests: real servers on 127.0.0.1, a raw HTTP client.

Servers run either in a thread of the test process (`running_server`: fast, and the test
can look inside the app and the hook records) or as a real `reqtrace serve` subprocess
(`spawned_server`: signals, exit codes, the CLI). Both always stop, even when a test fails.

The client is deliberately hand-written over a plain socket (not httptools, which the
server uses): it sends exactly the bytes a test gives it and reads responses by the rules
of RFC 9112, so a framing bug in the server cannot hide behind the same parser.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.helpers import ROOT
from tracer.records.hooks import HookRecord
from tracer.server.config import Config
from tracer.server.hooks import CallbackSink, HookSink
from tracer.server.main import Server, ServerInfo

IO_TIMEOUT = 10.0  # seconds a socket operation may take before the test fails (never hangs)


# Servers in a thread ------------------------------------------------------------------
@dataclass
class RunningServer:
    server: Server
    info: ServerInfo
    thread: threading.Thread
    records: list[HookRecord] = field(default_factory=list)
    exit_code: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        port = self.info.port
        assert port is not None
        return port

    def connect(self) -> HttpConnection:
        return HttpConnection(("127.0.0.1", self.port))


@contextlib.contextmanager
def running_server(
    app: Any = "tests.server_apps.basic:app",
    *,
    hooks: bool = False,
    sink: HookSink | None = None,
    **overrides: Any,
) -> Iterator[RunningServer]:
    """A server on an ephemeral port, in a thread with its own loop; stopped on exit."""
    overrides.setdefault("port", 0)
    overrides.setdefault("loop", "asyncio")
    config = Config(app=app, **overrides)
    records: list[HookRecord] = []
    if hooks and sink is None:
        sink = CallbackSink(records.append)
    started = threading.Event()
    infos: list[ServerInfo] = []

    def on_started(info: ServerInfo) -> None:
        infos.append(info)
        started.set()

    server = Server(config, hook_sink=sink, on_started=on_started)
    exit_code: list[int] = []

    def target() -> None:
        try:
            exit_code.append(server.run())
        finally:
            started.set()

    thread = threading.Thread(target=target, name="reqtrace-test-server", daemon=True)
    thread.start()
    try:
        assert started.wait(IO_TIMEOUT), "server did not start"
        assert infos, f"server exited during startup with {exit_code}"
        yield RunningServer(server, infos[0], thread, records, exit_code)
    finally:
        server.request_shutdown()
        thread.join(IO_TIMEOUT)
        assert not thread.is_alive(), "server thread did not stop"


# Servers in a subprocess -----------------------------------------------------------------
@dataclass
class SpawnedServer:
    process: subprocess.Popen[str]
    port: int
    stderr_lines: list[str]
    stdout_lines: list[str]

    def connect(self) -> HttpConnection:
        return HttpConnection(("127.0.0.1", self.port))

    def stop(self, signum: int = signal.SIGTERM, timeout: float = IO_TIMEOUT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout)

    def output(self) -> str:
        time.sleep(0.1)  # let the reader threads take the last lines
        return "".join(self.stderr_lines + self.stdout_lines)


def _pump(stream: Any, lines: list[str], found: queue.Queue[str]) -> None:
    for line in stream:
        lines.append(line)
        found.put(line)


@contextlib.contextmanager
def spawned_server(
    *args: str,
    app: str = "tests.server_apps.basic:app",
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
    expect_start: bool = True,
) -> Iterator[SpawnedServer]:
    """`python -m tracer serve APP --port 0 ARGS...`; the port is read from its log line."""
    command = [sys.executable, "-m", "tracer", "serve", app, "--port", "0", *args]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        pass_fds=pass_fds,
    )
    stderr_lines: list[str] = []
    stdout_lines: list[str] = []
    found: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None and process.stdout is not None
    threading.Thread(target=_pump, args=(process.stderr, stderr_lines, found), daemon=True).start()
    threading.Thread(
        target=_pump, args=(process.stdout, stdout_lines, queue.Queue()), daemon=True
    ).start()
    port = 0
    try:
        if expect_start:
            deadline = time.monotonic() + 20
            while not port:
                try:
                    line = found.get(timeout=max(deadline - time.monotonic(), 0.01))
                except queue.Empty:
                    raise AssertionError(f"server did not start: {''.join(stderr_lines)}") from None
                match = re.search(r"Listening on http://[^:]+:(\d+)", line)
                if match:
                    port = int(match.group(1))
        yield SpawnedServer(process, port, stderr_lines, stdout_lines)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(IO_TIMEOUT)


# A raw HTTP/1.1 client -------------------------------------------------------------------
@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: bytes
    chunked: bool = False

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        return values[0] if values else None

    def header_list(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


class ConnectionClosed(Exception):
    """The server closed the connection before a complete response."""


class HttpConnection:
    """One client connection; keeps unread bytes so pipelined responses can be read."""

    def __init__(self, address: tuple[str, int], timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> HttpConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = "1.1",
        host: bool = True,
    ) -> Response:
        self.send(build_request(method, target, headers, body, version, host))
        return self.read_response(head=method == "HEAD")

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionClosed(f"closed by server; unread: {self.buffer[:200]!r}")
        self.buffer += data

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        part, _, self.buffer = self.buffer.partition(marker)
        return part

    def _read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        part, self.buffer = self.buffer[:size], self.buffer[size:]
        return part

    def read_response(self, head: bool = False) -> Response:
        """Read one response; `head`: it answers a HEAD request (no body follows)."""
        while True:
            status_line, *header_lines = self._read_until(b"\r\n\r\n").split(b"\r\n")
            version, status, reason = [*status_line.decode("latin-1").split(" ", 2), ""][:3]
            if int(status) != 100:
                break  # 100 Continue is interim: the real response follows
        headers = []
        for line in header_lines:
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        response = Response(version, int(status), reason, headers, b"")
        if head or response.status in (204, 304):
            return response
        transfer = response.header("transfer-encoding")
        length = response.header("content-length")
        if transfer is not None:
            assert transfer.lower() == "chunked", transfer
            response.chunked = True
            response.body = self._read_chunked()
        elif length is not None:
            response.body = self._read_exactly(int(length))
        else:
            response.body = self.read_until_close()
        return response

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self._read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._read_until(b"\r\n")  # no trailers from our server
                return body
            body += self._read_exactly(size)
            assert self._read_exactly(2) == b"\r\n"

    def read_until_close(self) -> bytes:
        while True:
            try:
                self._fill()
            except ConnectionClosed:
                data, self.buffer = self.buffer, b""
                return data

    def read_interim(self) -> bytes:
        """The next complete head (e.g. "HTTP/1.1 100 Continue"), as raw bytes."""
        return self._read_until(b"\r\n\r\n")

    def is_closed(self, timeout: float = IO_TIMEOUT) -> bool:
        """True when the server closes (EOF or reset) within `timeout` with nothing unread."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        if data:
            self.buffer += data
            return False
        return True


def build_request(
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "1.1",
    host: bool = True,
) -> bytes:
    lines = [f"{method} {target} HTTP/{version}"]
    names = {name.lower() for name, _ in headers or []}
    if host and "host" not in names:
        lines.append("Host: test")
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def wait_for(predicate: Callable[[], bool], timeout: float = IO_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# Fixtures ------------------------------------------------------------------------------
def loops() -> list[str]:
    """The event loops to run a server test on: asyncio, and uvloop when installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


@pytest.fixture(scope="module", params=loops())
def basic_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """One server for the basic app per event loop, shared by a module's tests."""
    with running_server(loop=request.param) as server:
        yield server


@pytest.fixture
def events() -> Iterator[list[tuple[str, Any]]]:
    """The basic app's in-app event log, emptied around each test."""
    from tests.server_apps.basic import EVENTS

    EVENTS.clear()
    yield EVENTS
    EVENTS.clear()
