"""The pieces of --server uvicorn|gunicorn that need no BPF: the hooked protocols fed bytes
through a fake transport, the version check, the flags the tracer peeks at, the command
line split, and the hook pipe shared by several writers."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import uvicorn
from uvicorn.config import Config as UvicornConfig
from uvicorn.server import ServerState

from tracer.cli import hosted_run_arguments
from tracer.hosted.atomic_writer import PIPE_BUF, AtomicFrameWriter
from tracer.hosted.hook_state import HostedHooks, install
from tracer.hosted.uvicorn_h11 import TracedH11Protocol
from tracer.hosted.uvicorn_httptools import TracedHttpToolsProtocol
from tracer.hosted.uvicorn_support import OLDEST, hooked_protocol, unsupported_reason
from tracer.records.hooks import ConnectionClosed, ConnectionOpened, RequestTiming, request_stamps
from tracer.server.hook_channel import HookChannelReader
from tracer.server.hooks import record_from_wire
from tracer.session.hosted_args import HostedArgsError, hosted_server, parse_bind


class FakeSocket:
    def fileno(self) -> int:
        return 42

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 8000)

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 50000)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {
            "socket": FakeSocket(),
            "sockname": ("127.0.0.1", 8000),
            "peername": ("127.0.0.1", 50000),
        }.get(name, default)

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def sleepy_app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await asyncio.sleep(0.01)
    answer = b"got %d" % len(body)
    headers = [(b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def failing_app(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("the app's own mistake")


def _serve_bytes(
    protocol_class: type[Any],
    data: bytes,
    responses: int,
    app: Any = sleepy_app,
    **config_options: Any,
) -> list[Any]:
    """Feed `data` to one hooked connection; the hook records it made, as named tuples."""
    records: list[Any] = []
    install(HostedHooks(lambda wire: records.append(record_from_wire(wire))))

    async def main() -> FakeTransport:
        config = UvicornConfig(app=app, lifespan="off", log_level="critical", **config_options)
        config.load()
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(data)
        for _ in range(200):
            await asyncio.sleep(0.005)
            if sum(type(r) is RequestTiming for r in records) >= responses:
                break
        protocol.connection_lost(None)
        return transport

    try:
        asyncio.run(main())
    finally:
        install(None)
    return records


@pytest.mark.parametrize("protocol_class", [TracedHttpToolsProtocol, TracedH11Protocol])
def test_hooked_protocols_stamp_every_moment_in_order(protocol_class: type[Any]) -> None:
    request = b"POST /up?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    second = b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n"
    records = _serve_bytes(protocol_class, request + second, responses=2)
    kinds = [type(record) for record in records]
    assert kinds[0] is ConnectionOpened and ConnectionClosed in kinds
    opened = records[0]
    assert opened.fd == 42 and opened.peer == ("127.0.0.1", 50000) and opened.pid == os.getpid()
    first, then = [record for record in records if type(record) is RequestTiming]
    assert (first.method, first.path, first.query, first.seq) == ("POST", "/up", "x=1", 1)
    assert (then.path, then.seq, then.status, first.status) == ("/two", 2, 201, 201)
    assert first.request_body_bytes == 5 and first.outcome == "ok"
    for timing in (first, then):
        stamps = request_stamps(timing)
        assert all(stamps), stamps
        begin, head, body, called, started, returned, done = stamps
        assert begin <= head <= body <= called <= started <= done <= returned
        assert returned - called >= 10_000_000  # the app's sleep
        assert sum(size for _, size in timing.chunks) == timing.response_bytes > 0
        assert ("host", "a") in timing.headers
    assert then.first_byte_ns >= first.first_byte_ns


@pytest.mark.parametrize("protocol_class", [TracedHttpToolsProtocol, TracedH11Protocol])
def test_an_app_that_raises_is_recorded_with_uvicorns_500(protocol_class: type[Any]) -> None:
    records = _serve_bytes(protocol_class, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 1, failing_app)
    (timing,) = [record for record in records if type(record) is RequestTiming]
    assert (timing.status, timing.outcome) == (500, "app_error")
    assert timing.response_bytes > 0 and timing.response_done_ns >= timing.app_returned_ns


@pytest.mark.parametrize("protocol_class", [TracedHttpToolsProtocol, TracedH11Protocol])
def test_uvicorns_own_400_is_recorded_as_a_refused_request(protocol_class: type[Any]) -> None:
    """A malformed request never reaches the app: uvicorn answers 400 itself and closes."""
    records = _serve_bytes(protocol_class, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 1)
    (timing,) = [record for record in records if type(record) is RequestTiming]
    assert (timing.status, timing.outcome, timing.seq) == (400, "bad_request", 1)
    assert timing.app_called_ns == 0 and timing.response_bytes > 0
    assert 0 < timing.first_byte_ns <= timing.response_done_ns


@pytest.mark.parametrize("protocol_class", [TracedHttpToolsProtocol, TracedH11Protocol])
def test_uvicorns_own_503_over_the_concurrency_limit_is_recorded(
    protocol_class: type[Any],
) -> None:
    """--limit-concurrency 1 and this connection open: uvicorn answers 503 itself, with
    its own app, not the user's; the request's head is known."""
    records = _serve_bytes(
        protocol_class,
        b"GET /busy?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        1,
        limit_concurrency=1,
    )
    (timing,) = [record for record in records if type(record) is RequestTiming]
    assert (timing.status, timing.outcome) == (503, "overloaded")
    assert (timing.method, timing.path, timing.query) == ("GET", "/busy", "x=1")
    assert timing.app_called_ns == 0 and timing.headers_done_ns >= timing.first_byte_ns > 0
    assert ("host", "a") in timing.headers


async def silent_app(scope: Any, receive: Any, send: Any) -> None:
    """Returns without answering the first request; answers the others."""
    if scope["path"] == "/silent":
        return
    await sleepy_app(scope, receive, send)


@pytest.mark.parametrize("protocol_class", [TracedHttpToolsProtocol, TracedH11Protocol])
def test_an_app_that_returns_without_answering_owns_uvicorns_500(protocol_class: type[Any]) -> None:
    """uvicorn answers 500 after the app returned: that is the request's answer (an app
    error, as the bundled server says), not the request pipelined behind it (uvicorn closes
    the connection with that 500: the second is never answered, nor recorded as answered)."""
    silent = b"GET /silent HTTP/1.1\r\nHost: a\r\n\r\n"
    second = b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n"
    records = _serve_bytes(protocol_class, silent + second, 1, silent_app)
    timings = [record for record in records if type(record) is RequestTiming]
    assert [(t.path, t.status, t.outcome) for t in timings] == [("/silent", 500, "app_error")]
    assert timings[0].response_bytes > 0 and timings[0].response_done_ns > 0


def test_the_version_check_and_the_protocol_choice() -> None:
    assert unsupported_reason(uvicorn.__version__) == ""
    assert "older than 0.20.0" in unsupported_reason("0.19.0")
    assert hooked_protocol("h11", uvicorn.__version__)[0] is TracedH11Protocol
    assert hooked_protocol("httptools", uvicorn.__version__)[0] is TracedHttpToolsProtocol
    assert hooked_protocol("auto", uvicorn.__version__)[0] is TracedHttpToolsProtocol
    protocol, why = hooked_protocol("zttp", uvicorn.__version__)
    assert protocol is None and "--http zttp is not a protocol reqtrace hooks" in why
    assert hooked_protocol("h11", "0.18.3") == (None, unsupported_reason("0.18.3"))
    assert OLDEST == (0, 20, 0)


def test_the_flags_the_tracer_peeks_at() -> None:
    plain = hosted_server("uvicorn", ["app:app", "--http", "h11"])
    assert (plain.app, plain.host, plain.port, plain.uds) == ("app:app", "127.0.0.1", 8000, None)
    moved = hosted_server(
        "uvicorn", ["--host", "0.0.0.0", "--port", "9001", "m:a", "--app-dir", "src"]
    )
    assert (moved.host, moved.port, moved.app_dir, moved.app) == ("0.0.0.0", 9001, "src", "m:a")
    for refused in (["a:b", "--reload"], ["a:b", "--workers", "2"], ["a:b", "--fd", "3"]):
        with pytest.raises(HostedArgsError):
            hosted_server("uvicorn", refused)
    gunicorn = hosted_server("gunicorn", ["a:b", "-w", "2", "-b", "[::1]:9002"])
    assert (gunicorn.host, gunicorn.port, gunicorn.notes[0][:18]) == (
        "::1",
        9002,
        "gunicorn's workers",
    )
    assert parse_bind("unix:/tmp/s") == ("", 0, "/tmp/s") and parse_bind("h") == ("h", 8000, None)
    with pytest.raises(HostedArgsError, match="uvicorn's workers"):
        hosted_server("gunicorn", ["a:b", "-k", "sync"])
    with pytest.raises(HostedArgsError, match="at most 7 workers"):
        hosted_server("gunicorn", ["a:b", "-w", "9"])


def test_the_command_line_splits_into_ours_and_the_servers() -> None:
    args = hosted_run_arguments(
        [
            "run",
            "--server",
            "gunicorn",
            "a:b",
            "-w",
            "2",
            "--record",
            "t.jsonl",
            "--no-tui",
            "--",
            "--max-requests",
            "100",
        ]
    )
    assert args is not None and args.record == "t.jsonl" and args.no_tui
    assert args.server == "gunicorn" and args.max_requests is None
    assert args.server_args == ["a:b", "-w", "2", "--max-requests", "100"]
    assert hosted_run_arguments(["run", "a:b"]) is None
    assert hosted_run_arguments(["run", "--server", "uvicorn", "--help"]) is None
    assert hosted_run_arguments(["run", "--server=reqtrace", "a:b"]) is None


def test_several_writers_share_the_hook_pipe_without_mixing_frames() -> None:
    """Two processes write big batches at once; the reader gets every record, intact."""
    read_fd, write_fd = os.pipe()
    per_writer = 3000
    children = []
    for writer_id in (1, 2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            try:
                os.close(read_fd)
                writer = AtomicFrameWriter(write_fd, batch_records=200, max_backlog_frames=10**6)
                for seq in range(per_writer):
                    writer.emit_wire(("close", writer_id, 1, 3, seq, 0, "client_closed" * 20, seq))
                writer.close(timeout=10)
            finally:
                os._exit(0)
        children.append(pid)
    os.close(write_fd)
    reader = HookChannelReader(read_fd)
    records: list[Any] = []
    while not reader.eof:
        os.set_blocking(read_fd, True)
        records.extend(reader.read())
    for pid in children:
        os.waitpid(pid, 0)
    assert len(records) == 2 * per_writer
    for writer_id in (1, 2):
        seqs = [r.conn_id for r in records if r.pid == writer_id]
        assert seqs == list(range(per_writer))  # each writer's records, in order
    assert PIPE_BUF == 4096
