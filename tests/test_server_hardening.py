"""Issue 15, server hardening: framing and abuse cases replayed side by side with uvicorn.

A test for a defect failed on the server before its fix (checked on a copy of the old
tree); the others keep the fixes from going too far (valid Host forms, a body at the minimum
rate, trailers within the limits). Over real sockets on 127.0.0.1; loops are bounded;
timeouts are small and the waits generous: the tests check whether a connection is cut or
answered, never how fast.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import httptools
import pytest
from fastapi import FastAPI, Header

from tests.server_fixtures import (
    HttpConnection,
    Response,
    RunningServer,
    basic_server,
    build_request,
    loops,
    running_server,
    wait_for,
)
from tracer.server.config import Config, add_server_arguments, config_from_args
from tracer.server.cycle import RequestCycle
from tracer.server.protocol import MAX_PIPELINED, HttpProtocol

__all__ = ["basic_server"]

CHUNKED = [("Transfer-Encoding", "chunked")]


def chunked_post(target: str = "/echo") -> bytes:
    """A chunked POST whose body is "abc", up to and including the last-chunk line."""
    head = f"POST {target} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head.encode() + b"3\r\nabc\r\n0\r\n"


def trickled_until_cut(connection: HttpConnection, data: bytes, pause: float) -> bool:
    """Send `data` a byte at a time, `pause` seconds apart; True if the server closed."""
    for byte in data:
        try:
            connection.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return True
        if connection.is_closed(timeout=pause):
            return True
    return False


def scope_of(response: Response) -> dict[str, Any]:
    assert response.status == 200, response
    scope: dict[str, Any] = json.loads(response.body)
    return scope


def send_all_or_reset(connection: HttpConnection, data: bytes) -> None:
    """Send; the server may answer and stop reading before it has taken everything."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        connection.send(data)


# 1. Trailers are bounded like a head ----------------------------------------------------------
def test_too_many_trailer_fields_is_431(basic_server: RunningServer) -> None:
    trailers = b"".join(b"X-T%d: v\r\n" % i for i in range(10_000))
    with basic_server.connect() as connection:
        send_all_or_reset(connection, chunked_post() + trailers + b"\r\n")
        response = connection.read_response()
        assert response.status == 431
        assert response.header("connection") == "close"
        assert connection.is_closed()


def test_huge_trailer_field_is_431(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        connection.send(chunked_post() + b"X-Big: ")
        for _ in range(64):  # 1 MiB in 16 KiB writes: never one read
            try:
                connection.send(b"v" * 16384)
            except (BrokenPipeError, ConnectionResetError):
                break
        send_all_or_reset(connection, b"\r\n\r\n")
        response = connection.read_response()
        assert response.status == 431
        assert connection.is_closed()


def test_trailers_within_the_head_limits_are_fine() -> None:
    with running_server(limit_request_fields=5) as server, server.connect() as connection:
        connection.send(chunked_post() + b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n")
        assert scope_of(connection.read_response())["body"] == "abc"
        assert connection.request().status == 200  # the connection carries on
        connection.send(chunked_post() + b"".join(b"T%d: x\r\n" % i for i in range(6)) + b"\r\n")
        assert connection.read_response().status == 431


def test_trailer_section_cannot_be_trickled_forever() -> None:
    """Like a head: once a trailer section spans a read, it has --timeout-request-header."""
    config = {"timeout_request_header": 0.5, "timeout_request_body": 5.0}
    with running_server(**config) as server, server.connect() as connection:
        connection.send(chunked_post())
        trailer = b"X-Slow: " + b"s" * 100  # a byte per 0.1 s: never 5 s of silence
        assert trickled_until_cut(connection, trailer, 0.1), "the trailers were never cut off"
        assert connection.buffer.startswith(b"HTTP/1.1 408 ")


def test_endless_chunk_extension_is_400(basic_server: RunningServer) -> None:
    """A chunk-size line is framing the app never sees: bounded like a head too."""
    head = build_request("POST", "/echo", headers=CHUNKED)
    with basic_server.connect() as connection:
        connection.send(head + b"1;ext=")
        for _ in range(16):  # 256 KiB of one chunk extension
            try:
                connection.send(b"e" * 16384)
            except (BrokenPipeError, ConnectionResetError):
                break
        send_all_or_reset(connection, b"\r\nx\r\n0\r\n\r\n")
        response = connection.read_response()
        assert response.status == 400
        assert connection.is_closed()


# 2. Trailers never reach scope["headers"] ----------------------------------------------------
def test_trailers_are_not_added_to_the_scope_headers(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        connection.send(chunked_post() + b"Host: evil\r\nX-User: admin\r\n\r\n")
        scope = scope_of(connection.read_response())
    assert scope["body"] == "abc"
    assert scope["headers"] == [["host", "test"], ["transfer-encoding", "chunked"]]


def header_app() -> FastAPI:
    app = FastAPI()

    @app.post("/whoami")
    async def whoami(x_user: str | None = Header(None)) -> dict[str, str | None]:
        return {"user": x_user}

    return app


@pytest.mark.parametrize("loop", loops())
def test_fastapi_header_parameter_does_not_see_a_trailer(loop: str) -> None:
    with running_server(header_app(), loop=loop) as server, server.connect() as connection:
        connection.send(chunked_post("/whoami") + b"X-User: admin\r\n\r\n")
        response = connection.read_response()
    assert response.status == 200
    assert json.loads(response.body) == {"user": None}


# 3. Closed connections are freed by reference counting ----------------------------------------
def live(kinds: tuple[type, ...]) -> dict[str, int]:
    """Objects of these types still alive (gc.get_objects() does not collect)."""
    counts = {kind.__name__: 0 for kind in kinds}
    for thing in gc.get_objects():
        if type(thing) in kinds:
            counts[type(thing).__name__] += 1
    return counts


def at_most(counts: dict[str, int], baseline: dict[str, int]) -> bool:
    return all(counts[name] <= baseline[name] for name in counts)


def abort(sock: socket.socket) -> None:
    """Close with a RST, as a client that gives up does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture
def gc_off() -> Iterator[None]:
    """No automatic collection: what is freed now was freed by reference counting."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize("loop", loops())
def test_aborted_and_rejected_connections_are_freed_without_gc(loop: str, gc_off: None) -> None:
    kinds = (HttpProtocol, RequestCycle, httptools.HttpRequestParser)
    port = 0
    with running_server(loop=loop) as server:
        state = server.server.state
        assert state is not None
        port = server.port
        baseline = live(kinds)
        for round_number in range(10):
            # mid-head, 60 KiB in (under the head limit)
            mid_head = socket.create_connection(("127.0.0.1", port), timeout=10)
            mid_head.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"h" * 60_000)
            # mid-trailer, 40 KiB in: a cycle exists, its app waits for the rest
            mid_trailer = socket.create_connection(("127.0.0.1", port), timeout=10)
            mid_trailer.sendall(chunked_post() + b"X-Big: " + b"t" * 40_000)
            # rejected with 431 (the server lingers), then the client gives up
            rejected = HttpConnection(("127.0.0.1", port))
            send_all_or_reset(rejected, build_request(headers=[("X-Big", "r" * 70_000)]))
            assert rejected.read_response().status == 431
            # answered, then aborted on a kept-alive connection
            answered = HttpConnection(("127.0.0.1", port))
            assert answered.request(target="/echo", method="POST", body=b"x" * 1000).status == 200
            assert wait_for(lambda: len(state.connections) == 4), round_number
            time.sleep(0.05)  # let the server read what was sent
            for sock in (mid_head, mid_trailer, rejected.sock, answered.sock):
                abort(sock)
            assert wait_for(lambda: not state.connections), state.connections
            assert wait_for(lambda: at_most(live(kinds), baseline), timeout=5), (
                live(kinds),
                baseline,
            )
        with server.connect() as connection:  # and the server is fine
            assert connection.request().status == 200


# 4. HTTP/1.0 with Transfer-Encoding: close after it ------------------------------------------
def test_http10_chunked_keep_alive_closes_and_serves_nothing_behind(
    basic_server: RunningServer,
) -> None:
    first = (
        b"POST /echo HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    with basic_server.connect() as connection:
        connection.send(first + build_request(target="/echo?smuggled=1"))
        response = connection.read_response()
        assert scope_of(response)["body"] == "abc"
        assert response.header("connection") == "close"
        assert connection.is_closed()
        assert connection.buffer == b""  # the request behind it got no answer


# 5. Leading and trailing OWS is not part of a header value -------------------------------------
def test_header_values_lose_trailing_whitespace(basic_server: RunningServer) -> None:
    raw = b"GET /echo HTTP/1.1\r\nHost: test \r\nX-Pad: \t value \t \r\nX-Empty:  \t\r\n\r\n"
    with basic_server.connect() as connection:
        connection.send(raw)
        scope = scope_of(connection.read_response())
    assert scope["headers"] == [["host", "test"], ["x-pad", "value"], ["x-empty", ""]]


def test_expect_100_continue_with_trailing_space(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        headers = [("Expect", "100-continue \t"), ("Content-Length", "4")]
        connection.send(build_request("POST", "/echo", headers=headers))
        connection.sock.settimeout(5)
        assert connection.read_interim() == b"HTTP/1.1 100 Continue"
        connection.send(b"data")
        assert scope_of(connection.read_response())["body"] == "data"


# 6. No 100 Continue to HTTP/1.0 -----------------------------------------------------------------
def test_no_100_continue_to_http10(basic_server: RunningServer) -> None:
    headers = [("Expect", "100-continue"), ("Content-Length", "4")]
    with basic_server.connect() as connection:
        connection.send(build_request("POST", "/echo", headers=headers, version="1.0"))
        time.sleep(0.3)  # the app is waiting in receive(): when a 100 would go out
        connection.send(b"data")
        data = connection.read_until_close()  # HTTP/1.0: the response ends the connection
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:100]
    assert b"100 Continue" not in data


# 7. A body trickled below the minimum rate is cut -----------------------------------------------
def test_body_trickled_below_the_minimum_rate_is_408() -> None:
    config = {
        "timeout_request_body": 5.0,  # never this much silence: only the rate can cut it
        "min_request_body_rate": 100.0,
        "min_request_body_rate_grace": 0.5,
    }
    with running_server(**config) as server, server.connect() as connection:
        connection.send(build_request("POST", "/echo", headers=[("Content-Length", "1000")]))
        body = b"b" * 200  # 20 bytes/s: at most 10 s
        assert trickled_until_cut(connection, body, 0.05), "the trickled body was never cut off"
        assert connection.buffer.startswith(b"HTTP/1.1 408 ")


def test_body_at_the_minimum_rate_or_faster_is_not_cut() -> None:
    config = {"min_request_body_rate": 100.0, "min_request_body_rate_grace": 0.3}
    with running_server(**config) as server, server.connect() as connection:
        connection.send(build_request("POST", "/echo", headers=[("Content-Length", "1500")]))
        for _ in range(10):  # 150 bytes every 0.1 s: 1500 bytes/s
            connection.send(b"f" * 150)
            time.sleep(0.1)
        assert scope_of(connection.read_response())["body"] == "f" * 1500


def test_minimum_rate_flags_and_defaults() -> None:
    defaults = Config(app="m:a")
    assert (defaults.min_request_body_rate, defaults.min_request_body_rate_grace) == (500.0, 10.0)
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    args = ["m:a", "--min-request-body-rate", "0", "--min-request-body-rate-grace", "2.5"]
    config = config_from_args(parser.parse_args(args))
    assert (config.min_request_body_rate, config.min_request_body_rate_grace) == (0.0, 2.5)
    with pytest.raises(ValueError, match="min_request_body_rate"):
        Config(app="m:a", min_request_body_rate=-1)


# 8. Invalid Host values are 400 -----------------------------------------------------------------
@pytest.mark.parametrize("host", ["a b", "a/b", "user@host", "host:80x", "[::1", "h\xe9"])
def test_invalid_host_is_400(basic_server: RunningServer, host: str) -> None:
    with basic_server.connect() as connection:
        connection.send(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode("latin-1"))
        response = connection.read_response()
        assert response.status == 400
        assert response.body == b"Invalid Host header\n"
        assert connection.is_closed()


VALID_HOSTS = ["example.com", "example.com:8080", "127.0.0.1:80", "[::1]:8000", "xn--p1ai", ""]


@pytest.mark.parametrize("host", VALID_HOSTS)
def test_valid_hosts_are_served(basic_server: RunningServer, host: str) -> None:
    with basic_server.connect() as connection:
        connection.send(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert connection.read_response().status == 200


# Found alongside ---------------------------------------------------------------------------------
def test_client_waiting_for_100_continue_is_not_timed_out() -> None:
    """The body clock starts when "100 Continue" goes out, not while the app takes its time."""
    headers = [("Expect", "100-continue"), ("Content-Length", "4")]
    with running_server(timeout_request_body=0.3) as server, server.connect() as connection:
        connection.send(build_request("POST", "/slow-reader?s=1.0", headers=headers))
        assert connection.read_interim() == b"HTTP/1.1 100 Continue"
        connection.send(b"data")
        report = json.loads(connection.read_response().body)
    assert report["bytes"] == 4


def test_pipelined_requests_beyond_the_queue_limit_are_not_read(
    basic_server: RunningServer,
) -> None:
    """One read of tiny pipelined requests must not become thousands of queued requests:
    the one that fills the queue is the last served, and its response closes."""
    count = 4 * MAX_PIPELINED
    with basic_server.connect() as connection:
        connection.send(build_request(target="/slow?s=0.2&tag=first") + build_request() * count)
        responses = [connection.read_response()]
        while responses[-1].header("connection") != "close" and len(responses) <= count:
            responses.append(connection.read_response())
        assert connection.is_closed()
    assert responses[0].body == b"first"
    assert all(response.status == 200 for response in responses)
    assert len(responses) == MAX_PIPELINED + 1


def test_bad_request_waiting_behind_a_response_is_not_replaced_by_a_timeout() -> None:
    """Once the server stopped reading (it answers bad input after the response in
    flight), no timer may answer the client again."""
    with running_server(timeout_request_header=0.3) as server, server.connect() as connection:
        connection.send(build_request(target="/slow?s=1.0&tag=first") + b"GET / HTTP/1.1\r\n")
        time.sleep(0.1)  # the second head is open: its header timer runs
        connection.send(b"Bad Header: x\r\n\r\n")
        assert connection.read_response().body == b"first"
        response = connection.read_response()
        assert response.status == 400
        assert response.body.startswith(b"Invalid HTTP request")
        assert connection.is_closed()
