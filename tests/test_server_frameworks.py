"""Real FastAPI and Starlette apps served end to end over a socket."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.server_fixtures import HttpConnection, RunningServer, loops, running_server, wait_for
from tracer.records.hooks import ConnectionClosed, RequestTiming

BOUNDARY = "reqtrace-test-boundary"


def multipart(fields: dict[str, str], filename: str, content: bytes) -> bytes:
    parts = []
    for name, value in fields.items():
        disposition = f'Content-Disposition: form-data; name="{name}"'
        parts.append(f"--{BOUNDARY}\r\n{disposition}\r\n\r\n{value}\r\n".encode())
    parts.append(
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


MULTIPART = [("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")]
JSON = [("Content-Type", "application/json")]


@pytest.fixture(scope="module", params=loops())
def fastapi_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with running_server("tests.server_apps.fastapi_app:app", loop=request.param) as server:
        yield server


@pytest.fixture(scope="module")
def starlette_server() -> Iterator[RunningServer]:
    with running_server("tests.server_apps.starlette_app:app") as server:
        yield server


def get_json(connection: HttpConnection, target: str) -> tuple[int, object]:
    response = connection.request(target=target)
    return response.status, json.loads(response.body)


def test_fastapi_routing_and_json(fastapi_server: RunningServer) -> None:
    with fastapi_server.connect() as connection:
        assert get_json(connection, "/") == (200, {"message": "hello"})
        assert get_json(connection, "/items/5?q=abc") == (200, {"item_id": 5, "q": "abc"})
        assert get_json(connection, "/items/404") == (404, {"detail": "no such item"})
        assert get_json(connection, "/items/notanumber")[0] == 422
        assert get_json(connection, "/nowhere") == (404, {"detail": "Not Found"})


def test_fastapi_json_body(fastapi_server: RunningServer) -> None:
    payload = {"name": "widget", "price": 2.5, "tags": ["a", "b"]}
    with fastapi_server.connect() as connection:
        response = connection.request(
            "POST", "/items", headers=JSON, body=json.dumps(payload).encode()
        )
    assert response.status == 200
    assert json.loads(response.body) == {"created": payload, "total": 5.0}


def test_fastapi_streaming_response(fastapi_server: RunningServer) -> None:
    with fastapi_server.connect() as connection:
        response = connection.request(target="/stream")
        assert response.chunked
        assert response.body == b"line 0\nline 1\nline 2\nline 3\n"
        assert connection.request().status == 200  # keep-alive after a stream


def test_fastapi_upload(fastapi_server: RunningServer) -> None:
    content = bytes(range(256)) * 2000  # 512 KB: several http.request messages
    body = multipart({"note": "hi"}, "data.bin", content)
    with fastapi_server.connect() as connection:
        response = connection.request("POST", "/upload", headers=MULTIPART, body=body)
    assert response.status == 200, response.body
    assert json.loads(response.body) == {"filename": "data.bin", "size": len(content), "note": "hi"}


def test_fastapi_chunked_upload(fastapi_server: RunningServer) -> None:
    payload = json.dumps({"name": "chunky", "price": 1.0}).encode()
    chunked = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in (payload[:10], payload[10:]))
    with fastapi_server.connect() as connection:
        response = connection.request(
            "POST",
            "/items",
            headers=[*JSON, ("Transfer-Encoding", "chunked")],
            body=chunked + b"0\r\n\r\n",
        )
    assert json.loads(response.body)["created"]["name"] == "chunky"


def test_starlette_routes_json_and_lifespan_state(starlette_server: RunningServer) -> None:
    with starlette_server.connect() as connection:
        response = connection.request()
        assert response.body == b"hello from lifespan"
        assert get_json(connection, "/users/ada?q=1") == (200, {"user": "ada", "q": "1"})
        response = connection.request(
            "POST", "/echo", headers=JSON, body=json.dumps({"x": [1, 2]}).encode()
        )
        assert json.loads(response.body) == {"received": {"x": [1, 2]}}
        assert connection.request(target="/missing").status == 404


def test_starlette_streaming_response(starlette_server: RunningServer) -> None:
    with starlette_server.connect() as connection:
        response = connection.request(target="/numbers")
        assert response.chunked
        assert response.body == b"0\n1\n2\n3\n4\n"
        response = connection.request(target="/numbers", version="1.0")
        assert not response.chunked
        assert response.body == b"0\n1\n2\n3\n4\n"


def test_starlette_upload(starlette_server: RunningServer) -> None:
    content = b"upload-content-" * 10_000
    body = multipart({"note": "starlette"}, "file.txt", content)
    with starlette_server.connect() as connection:
        response = connection.request("POST", "/upload", headers=MULTIPART, body=body)
    assert json.loads(response.body) == {
        "filename": "file.txt",
        "size": len(content),
        "field": "starlette",
    }


def test_starlette_head_request(starlette_server: RunningServer) -> None:
    with starlette_server.connect() as connection:
        response = connection.request("HEAD", "/")
        assert response.status == 200
        assert response.header("content-length") == str(len(b"hello from lifespan"))
        assert connection.request().status == 200


def test_fastapi_with_hooks_records_every_request() -> None:
    app = "tests.server_apps.fastapi_app:app"
    with running_server(app, hooks=True) as server, server.connect() as connection:
        connection.request(target="/items/1")
        connection.request(target="/stream")
    assert wait_for(lambda: any(isinstance(r, ConnectionClosed) for r in server.records))
    timings = [r for r in server.records if isinstance(r, RequestTiming)]
    assert [(t.path, t.status, t.outcome) for t in timings] == [
        ("/items/1", 200, "ok"),
        ("/stream", 200, "ok"),
    ]
    assert len(timings[1].chunks) > 1
