"""The bundled server speaks HTTP/1.1 and ASGI HTTP 2.x correctly, over real sockets."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from tests.server_fixtures import (
    HttpConnection,
    RunningServer,
    basic_server,
    build_request,
    events,
    running_server,
    wait_for,
)

__all__ = ["basic_server", "events"]  # fixtures used by name below


def echo(connection: HttpConnection, **kwargs: Any) -> dict[str, Any]:
    response = connection.request(target=kwargs.pop("target", "/echo"), **kwargs)
    assert response.status == 200, response
    result: dict[str, Any] = json.loads(response.body)
    return result


# The scope ------------------------------------------------------------------------------
def test_scope_has_every_http_key(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        scope = echo(connection, target="/echo?a=1&b=%20x")
        local = connection.sock.getsockname()
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/echo"
    assert scope["raw_path"] == "/echo"
    assert scope["query_string"] == "a=1&b=%20x"  # not decoded
    assert scope["root_path"] == ""
    assert scope["client"] == [local[0], local[1]]
    assert scope["server"] == ["127.0.0.1", basic_server.port]
    assert scope["state"] == []


def test_path_is_decoded_and_raw_path_is_not(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        scope = echo(connection, target="/echo/a%20b/%C3%A9t%C3%A9%2Fx?q=%C3%A9")
    assert scope["path"] == "/echo/a b/\u00e9t\u00e9/x"
    assert scope["raw_path"] == "/echo/a%20b/%C3%A9t%C3%A9%2Fx"
    assert scope["query_string"] == "q=%C3%A9"


def test_root_path_prefixes_path_and_raw_path() -> None:
    with running_server(root_path="/api/") as server, server.connect() as connection:
        scope = echo(connection, target="/ech%6F")
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/echo"
    assert scope["raw_path"] == "/api/ech%6F"


def test_headers_keep_duplicates_order_and_are_lowercased(basic_server: RunningServer) -> None:
    headers = [("X-B", "1"), ("x-a", "2"), ("X-B", "3"), ("Cookie", "a=1")]
    with basic_server.connect() as connection:
        scope = echo(connection, headers=headers)
    assert scope["headers"] == [
        ["host", "test"],
        ["x-b", "1"],
        ["x-a", "2"],
        ["x-b", "3"],
        ["cookie", "a=1"],
    ]


def test_absolute_form_target(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        scope = echo(connection, target="http://test/echo?x=1")
    assert scope["path"] == "/echo"
    assert scope["query_string"] == "x=1"


# Keep-alive and pipelining ----------------------------------------------------------------
def test_keep_alive_serves_many_requests_on_one_connection(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        for _ in range(5):
            response = connection.request()
            assert response.status == 200
            assert response.body == b"Hello, world!"
            assert response.header("connection") is None


def test_connection_close_request_closes_after_response(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        response = connection.request(headers=[("Connection", "close")])
        assert response.header("connection") == "close"
        assert connection.is_closed()


def test_http10_closes_by_default_and_keeps_alive_on_request(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        response = connection.request(version="1.0", host=False)
        assert response.version == "HTTP/1.1"
        assert response.header("connection") == "close"
        assert connection.is_closed()
    with basic_server.connect() as connection:
        for _ in range(2):
            response = connection.request(version="1.0", headers=[("Connection", "keep-alive")])
            assert response.status == 200
            assert response.header("connection") == "keep-alive"


def test_pipelined_requests_are_answered_in_order(basic_server: RunningServer) -> None:
    # The first request is the slowest: answering in completion order would be wrong.
    requests = [
        build_request(target="/slow?s=0.3&tag=first"),
        build_request(target="/slow?s=0.0&tag=second"),
        build_request(target="/echo", method="POST", body=b"third-body"),
        build_request(target="/slow?s=0.1&tag=fourth"),
    ]
    with basic_server.connect() as connection:
        connection.send(b"".join(requests))
        bodies = [connection.read_response().body for _ in requests]
    assert bodies[0] == b"first"
    assert bodies[1] == b"second"
    assert json.loads(bodies[2])["body"] == "third-body"
    assert bodies[3] == b"fourth"


def test_pipelined_requests_split_across_writes(basic_server: RunningServer) -> None:
    data = build_request(target="/slow?s=0.05&tag=a") + build_request(target="/slow?s=0&tag=b")
    with basic_server.connect() as connection:
        for i in range(0, len(data), 7):
            connection.send(data[i : i + 7])
        assert connection.read_response().body == b"a"
        assert connection.read_response().body == b"b"


# Request bodies ----------------------------------------------------------------------------
def test_content_length_body(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        scope = echo(connection, method="POST", body=b"x" * 1000)
    assert scope["body"] == "x" * 1000


def test_chunked_request_body_is_dechunked(basic_server: RunningServer) -> None:
    chunked = b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    with basic_server.connect() as connection:
        scope = echo(
            connection, method="POST", headers=[("Transfer-Encoding", "chunked")], body=chunked
        )
    assert scope["body"] == "hello world"


def test_large_body_streams_with_more_body(basic_server: RunningServer) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    with basic_server.connect() as connection:
        connection.send(build_request("POST", "/echo", body=body))
        response = connection.read_response()
    scope = json.loads(response.body)
    assert scope["body"].encode("latin-1") == body
    assert len(scope["body_messages"]) > 1  # more_body=True messages came before the last


def test_reading_pauses_while_the_app_does_not_take_the_body() -> None:
    """Flow control: the server must not buffer a big upload the app is not reading."""
    # The kernel holds at most the send buffer (autotuned up to tcp_wmem max, 4 MiB here)
    # plus a receive buffer that autotuning only grows while the server reads: far below
    # 32 MiB. A server that kept reading would take it all in well within the timeout.
    body = b"z" * (32 * 1024 * 1024)
    with running_server() as server, server.connect() as connection:
        connection.sock.sendall(build_request("POST", "/slow-reader?s=1.5", body=b"")[:-2])
        head = f"Content-Length: {len(body)}\r\n\r\n".encode()
        connection.sock.sendall(head)
        connection.sock.settimeout(0.5)
        sent = 0
        try:
            while sent < len(body):
                sent += connection.sock.send(body[sent : sent + (1 << 20)])
        except TimeoutError:
            pass
        assert sent < len(body), "the server read a big body that nobody asked for"
        connection.sock.settimeout(10)
        connection.sock.sendall(body[sent:])
        report = json.loads(connection.read_response().body)
    assert report["bytes"] == len(body)
    assert report["largest"] <= 4 * 1024 * 1024  # handed over in pieces, not all at once


def test_unread_body_is_drained_and_connection_reused(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        response = connection.request("POST", "/no-read", body=b"y" * 200_000)
        assert response.body == b"did not read"
        assert connection.request().status == 200


def test_expect_100_continue_is_answered_on_first_receive(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        connection.send(
            build_request(
                "POST", "/echo", headers=[("Expect", "100-continue"), ("Content-Length", "4")]
            )
        )
        assert connection.read_interim() == b"HTTP/1.1 100 Continue"
        connection.send(b"data")
        response = connection.read_response()
    assert json.loads(response.body)["body"] == "data"


def test_expect_100_without_reading_closes_instead(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        connection.send(
            build_request(
                "POST", "/no-read", headers=[("Expect", "100-continue"), ("Content-Length", "9")]
            )
        )
        response = connection.read_response()
        assert response.status == 200  # no 100 Continue was sent: the app never asked
        assert connection.is_closed()


# Responses ---------------------------------------------------------------------------------
def test_date_and_server_headers(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        response = connection.request()
        custom = connection.request(target="/custom-server-header")
    assert response.header("server") == "reqtrace"
    date = response.header("date")
    assert date is not None and date.endswith(" GMT")
    assert time.strptime(date, "%a, %d %b %Y %H:%M:%S GMT")
    assert custom.header_list("server") == ["custom"]  # the app's replaces ours


def test_chunked_response_without_content_length(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        response = connection.request(target="/stream?parts=3")
        assert response.chunked
        assert response.body == b"part0;part1;part2;"
        assert connection.request().status == 200  # still usable


def test_no_chunked_to_http10_clients(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        response = connection.request(target="/stream?parts=2", version="1.0")
        assert not response.chunked
        assert response.header("transfer-encoding") is None
        assert response.body == b"part0;part1;"  # delimited by the close


def test_head_has_no_body_but_keeps_content_length(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        response = connection.request("HEAD", "/")
        assert response.header("content-length") == "13"
        assert connection.request().body == b"Hello, world!"  # nothing stray was sent


def test_head_without_content_length_is_not_chunked(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        response = connection.request("HEAD", "/stream")
        assert response.header("transfer-encoding") is None
        assert connection.request().status == 200


def test_204_and_304_have_no_body(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        for code in (204, 304):
            response = connection.request(target=f"/status?code={code}")
            assert response.status == code
            assert response.header("transfer-encoding") is None
        assert connection.request().body == b"Hello, world!"


def test_response_longer_than_content_length_is_cut_and_closed(
    basic_server: RunningServer, events: list[tuple[str, Any]]
) -> None:
    with basic_server.connect() as connection:
        # Nothing was written yet (the head waits for the first body): a clean 500.
        response = connection.request(target="/too-long")
        assert response.status == 500
        assert connection.is_closed()
    with basic_server.connect() as connection:
        connection.send(build_request(target="/too-long?later=1"))
        data = connection.read_until_close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\n012")  # the excess never went out
    assert wait_for(lambda: ("too_long", "Response content longer than Content-Length.") in events)


def test_response_shorter_than_content_length_closes(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        connection.send(build_request(target="/too-short"))
        data = connection.read_until_close()
    assert data.endswith(b"\r\n\r\n01234")


def test_big_response_with_write_backpressure(basic_server: RunningServer) -> None:
    size = 20_000_000
    with basic_server.connect() as connection:
        connection.send(build_request(target=f"/big?n={size}"))
        time.sleep(0.3)  # let the server fill the socket buffers and pause writing
        response = connection.read_response()
    assert len(response.body) == size


# Disconnects and app errors ------------------------------------------------------------------
def test_app_sees_http_disconnect_and_send_raises_oserror(
    basic_server: RunningServer, events: list[tuple[str, Any]]
) -> None:
    with basic_server.connect() as connection:
        connection.send(build_request("POST", "/wait-disconnect", body=b"abc"))
        assert wait_for(lambda: ("waiting", None) in events)
    assert wait_for(lambda: ("send_raised", "ClientDisconnected") in events)
    assert ("received", "http.disconnect") in events


def test_concurrent_receive_calls_all_see_the_disconnect(
    basic_server: RunningServer, events: list[tuple[str, Any]]
) -> None:
    with basic_server.connect() as connection:
        connection.send(build_request("POST", "/concurrent-receive", body=b"x"))
        assert wait_for(lambda: ("watching", None) in events)
    assert wait_for(lambda: ("watcher_got", "http.disconnect") in events)


def test_exception_before_response_is_500_and_close(basic_server: RunningServer) -> None:
    for target in ("/raise-before", "/raise-after-start", "/invalid-message", "/invalid-status"):
        with basic_server.connect() as connection:
            response = connection.request(target=target)
            assert response.status == 500, target
            assert response.header("connection") == "close"
            assert connection.is_closed()


def test_invalid_response_header_is_500(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        response = connection.request(target="/bad-header")
    assert response.status == 500
    assert response.header("set-cookie") is None  # no header injection


def test_returning_without_response_is_500(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        assert connection.request(target="/no-response").status == 500


def test_exception_after_body_started_closes_connection(basic_server: RunningServer) -> None:
    with basic_server.connect() as connection:
        connection.send(build_request(target="/raise-after-body"))
        data = connection.read_until_close()
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"partial" in data
    assert not data.endswith(b"0\r\n\r\n")  # no terminating chunk: the client sees it broke


def test_app_errors_are_logged(caplog: Any) -> None:
    with running_server() as server, server.connect() as connection:
        connection.request(target="/raise-before")
        connection.close()
        with server.connect() as second:
            second.request(target="/invalid-message")
    messages = [r.getMessage() for r in caplog.records if r.name == "reqtrace.server"]
    assert "Exception in ASGI application" in messages
    assert any("http.response.start" in (r.exc_text or "") for r in caplog.records)


def test_background_work_after_response_does_not_block_keep_alive(
    basic_server: RunningServer, events: list[tuple[str, Any]]
) -> None:
    with basic_server.connect() as connection:
        assert connection.request(target="/background").body == b"done"
        assert connection.request().status == 200
    assert wait_for(lambda: ("background_done", None) in events)


def test_limit_concurrency_answers_503() -> None:
    with running_server(limit_concurrency=1) as server, server.connect() as busy:
        busy.send(build_request(target="/slow?s=1.0"))
        time.sleep(0.2)
        with server.connect() as second:
            response = second.request()
            assert response.status == 503
            assert second.is_closed()
        assert busy.read_response().status == 200


def test_upgrade_request_is_answered_as_plain_http(basic_server: RunningServer) -> None:
    """No WebSocket/h2c here: the app answers over HTTP/1.1, then the connection closes
    (what the client sends after an Upgrade request is not HTTP/1.1 any more)."""
    headers = [("Connection", "Upgrade"), ("Upgrade", "websocket")]
    with basic_server.connect() as connection:
        response = connection.request(headers=headers)
        assert response.status == 200
        assert response.body == b"Hello, world!"
        assert connection.is_closed()


def test_unix_socket(tmp_path: Any) -> None:
    path = str(tmp_path / "reqtrace.sock")
    with running_server(uds=path) as server:
        assert server.info.listeners[0].family == "unix"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(build_request(target="/echo"))
        data = b""
        while b'"body_messages"' not in data:
            data += sock.recv(65536)
        sock.close()
    scope = json.loads(data.partition(b"\r\n\r\n")[2])
    assert scope["server"] == [path, None]
    assert scope["client"] is None
