"""Timeouts close what a client leaves hanging, and only that.

Small configured timeouts (0.3-0.5 s) and generous waits: the tests check that a connection
does or does not get closed, never how fast the server is.
"""

from __future__ import annotations

import json
import time

from tests.server_fixtures import build_request, running_server


def test_idle_fresh_connection_is_closed_after_keep_alive_timeout() -> None:
    with running_server(timeout_keep_alive=0.3) as server, server.connect() as connection:
        assert connection.is_closed(timeout=5)


def test_keep_alive_timeout_after_a_response() -> None:
    with running_server(timeout_keep_alive=0.3) as server, server.connect() as connection:
        for _ in range(3):  # activity keeps it open...
            assert connection.request().status == 200
            time.sleep(0.1)
        assert connection.is_closed(timeout=5)  # ...silence closes it
        assert connection.buffer == b""  # closed quietly, no response


def test_keep_alive_timeout_does_not_cut_a_slow_app() -> None:
    with running_server(timeout_keep_alive=0.2) as server, server.connect() as connection:
        response = connection.request(target="/slow?s=0.8&tag=done")
        assert response.body == b"done"


def test_header_timeout_cannot_be_extended_byte_by_byte() -> None:
    """A client trickling one byte every 0.1 s is cut at first byte + the header timeout."""
    server_context = running_server(timeout_request_header=0.5, timeout_keep_alive=5)
    with server_context as server, server.connect() as connection:
        started = time.monotonic()
        trickle = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 100
        closed_after = None
        for byte in trickle:
            try:
                connection.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
            if connection.is_closed(timeout=0.1):
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None, "the slow client was never cut off"
        assert closed_after < 5.0  # the trickle alone would take > 12 s
        assert connection.buffer.startswith(b"HTTP/1.1 408 ")


def test_body_timeout_answers_408() -> None:
    with running_server(timeout_request_body=0.4) as server, server.connect() as connection:
        connection.send(build_request("POST", "/echo", headers=[("Content-Length", "100")]))
        connection.send(b"only part of the body")
        response = connection.read_response()
        assert response.status == 408
        assert connection.is_closed()


def test_body_timeout_is_silence_not_total_time() -> None:
    """A body arriving slowly but steadily is not cut (unlike the header timeout)."""
    with running_server(timeout_request_body=0.5) as server, server.connect() as connection:
        connection.send(build_request("POST", "/echo", headers=[("Content-Length", "10")]))
        for i in range(10):
            connection.send(b"%d" % i)
            time.sleep(0.15)  # 1.5 s in total, never 0.5 s of silence
        response = connection.read_response()
        assert json.loads(response.body)["body"] == "0123456789"


def test_body_timeout_not_applied_while_the_app_holds_the_client_back() -> None:
    """When the server paused reading because the app is slow, the client is not at fault."""
    body = b"q" * (8 * 1024 * 1024)
    with running_server(timeout_request_body=0.3) as server, server.connect() as connection:
        connection.send(build_request("POST", "/slow-reader?s=1.0", body=body))
        report = json.loads(connection.read_response().body)
        assert report["bytes"] == len(body)
