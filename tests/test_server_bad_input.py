"""Bad and abusive input gets the right status and a closed connection, never a hang."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server_fixtures import (
    HttpConnection,
    RunningServer,
    basic_server,
    build_request,
    running_server,
)

__all__ = ["basic_server"]


def rejected(server: RunningServer, data: bytes) -> tuple[int, HttpConnection]:
    """Send raw bytes; return the status of the answer and the (open) connection."""
    connection = server.connect()
    connection.send(data)
    response = connection.read_response()
    assert response.header("connection") == "close"
    return response.status, connection


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"HELLO\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),  # bare LF
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", 400),  # obs-fold
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),  # control character
        (b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # raw non-ASCII target
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),  # two Hosts
        (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 3\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
    ],
    ids=lambda value: value.decode("latin-1")[:40] if isinstance(value, bytes) else str(value),
)
def test_malformed_request_is_answered_and_closed(
    basic_server: RunningServer, raw: bytes, status: int
) -> None:
    answer, connection = rejected(basic_server, raw)
    with connection:
        assert answer == status
        assert connection.is_closed()


def test_request_target_over_limit_is_414() -> None:
    with running_server(limit_request_line=100) as server:
        with server.connect() as connection:
            assert connection.request(target="/" + "a" * 99).status == 404  # at the limit
        status, connection = rejected(server, build_request(target="/" + "a" * 100))
        with connection:
            assert status == 414
            assert connection.is_closed()


def test_default_limits_reject_huge_urls_and_heads(basic_server: RunningServer) -> None:
    status, connection = rejected(basic_server, build_request(target="/" + "a" * 9000))
    connection.close()
    assert status == 414
    huge = [("X-Big", "v" * 70_000)]
    status, connection = rejected(basic_server, build_request(headers=huge))
    connection.close()
    assert status == 431


def test_headers_over_byte_limit_are_431_even_trickled() -> None:
    with running_server(limit_request_head=2048) as server:
        with server.connect() as connection:
            assert connection.request(headers=[("X-Fits", "v" * 1800)]).status == 200
        connection = server.connect()
        with connection:
            connection.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
            for _ in range(40):  # 40 x 100 bytes, in separate writes
                try:
                    connection.send(b"X-Pad: " + b"p" * 91 + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    break
            response = connection.read_response()
            assert response.status == 431
            assert connection.is_closed()


def test_head_in_one_big_chunk_over_limit_is_431() -> None:
    with running_server(limit_request_head=4096) as server:
        headers = [(f"X-{i}", "v" * 50) for i in range(100)]
        status, connection = rejected(server, build_request(headers=headers))
        connection.close()
        assert status == 431
        # a big body after a small head is not a big head
        with server.connect() as connection:
            response = connection.request("POST", "/echo", body=b"b" * 100_000)
            assert response.status == 200


def test_too_many_header_fields_is_431() -> None:
    with running_server(limit_request_fields=10) as server:
        with server.connect() as connection:
            fits = [(f"X-{i}", "v") for i in range(9)]  # + Host = 10
            assert connection.request(headers=fits).status == 200
        headers = [(f"X-{i}", "v") for i in range(10)]
        status, connection = rejected(server, build_request(headers=headers))
        connection.close()
        assert status == 431


def test_bad_request_after_good_pipelined_one(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        connection.send(build_request(target="/slow?s=0.1&tag=good") + b"GARBAGE\r\n\r\n")
        assert connection.read_response().body == b"good"
        response = connection.read_response()
        assert response.status == 400
        assert connection.is_closed()


def test_error_body_says_why(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        connection.send(b"GET / HTTP/1.1\r\n\r\n")
        assert connection.read_response().body == b"Missing Host header\n"


def test_server_survives_abuse_and_keeps_serving(basic_server: RunningServer) -> None:
    for raw in (b"\x00" * 100, b"\r\n" * 50, b"GET / HTTP/1.1\r\nHost: a\r\n" + b"\x16" * 10):
        with basic_server.connect() as connection:
            connection.send(raw)
            connection.is_closed(timeout=0.2)
    with basic_server.connect() as connection:
        assert connection.request().status == 200


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.one_of(
        st.binary(min_size=1, max_size=300),
        st.builds(
            lambda method, target, junk: method + b" " + target + b" HTTP/1.1\r\n" + junk,
            st.sampled_from([b"GET", b"POST", b"PUT", b"get", b"G\x00T"]),
            st.binary(min_size=0, max_size=40),
            st.binary(min_size=0, max_size=200),
        ),
    )
)
def test_fuzzed_input_never_hangs_or_kills_the_server(
    basic_server: RunningServer, data: bytes
) -> None:
    """Whatever the bytes, the server answers (any status) or closes within the header timeout,
    and the next client is served."""
    with basic_server.connect() as connection:
        connection.send(data)
        connection.sock.shutdown(1)  # SHUT_WR: no more input, so nothing may wait forever
        connection.is_closed(timeout=5)
        assert connection.buffer == b"" or connection.buffer.startswith(b"HTTP/1.1 ")
    with basic_server.connect() as connection:
        assert connection.request().status == 200
