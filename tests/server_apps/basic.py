"""A raw ASGI app whose routes each exercise one part of the server's contract.

Routes are chosen by path; `/echo` reports what the app saw (scope and body) as JSON so
tests can check the scope over a real socket. `EVENTS` records what in-process tests need
to observe from inside the app (disconnects, exceptions raised by `send`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

EVENTS: list[tuple[str, Any]] = []
"""(what, detail) appended by routes that report from inside the app."""


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # no lifespan support: the server must carry on ("auto")
    # Route on the first path segment below root_path: "/echo/anything" is /echo.
    path = scope["path"][len(scope["root_path"]) :]
    route = ROUTES.get("/" + path.split("/", 2)[1] if path.startswith("/") else path, not_found)
    await route(scope, receive, send)


def _query(scope: Scope) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain"
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> tuple[bytes, list[int]]:
    """The whole request body, and the size of each http.request message."""
    parts = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), [len(part) for part in parts]


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await _respond(send, 200, b"Hello, world!")


async def clock(scope: Scope, receive: Receive, send: Send) -> None:
    """This machine's CLOCK_MONOTONIC in ns: a guest VM's clock, compared with the host's."""
    await _respond(send, 200, str(time.monotonic_ns()).encode())


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await _respond(send, 404, b"Not Found")


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body, sizes = await read_body(receive)
    report = {
        "type": scope["type"],
        "asgi": scope["asgi"],
        "http_version": scope["http_version"],
        "method": scope["method"],
        "scheme": scope["scheme"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "root_path": scope["root_path"],
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "client": list(scope["client"]) if scope["client"] else None,
        "server": list(scope["server"]) if scope["server"] else None,
        "state": sorted(scope.get("state", {})),
        "body": body.decode("latin-1"),
        "body_messages": sizes,
    }
    scope.get("state", {})["mutated_by_request"] = True  # must not leak to the next request
    await _respond(send, 200, json.dumps(report).encode(), b"application/json")


async def stream(scope: Scope, receive: Receive, send: Send) -> None:
    """No content-length: chunked to HTTP/1.1, close-delimited to HTTP/1.0."""
    parts = int(_query(scope).get("parts", "3"))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(parts):
        await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def status(scope: Scope, receive: Receive, send: Send) -> None:
    code = int(_query(scope)["code"])
    await send({"type": "http.response.start", "status": code, "headers": []})
    await send({"type": "http.response.body", "body": b"should not be sent"})


async def too_long(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    try:
        if _query(scope).get("later"):  # something already went out when the excess comes
            await send({"type": "http.response.body", "body": b"012", "more_body": True})
            await send({"type": "http.response.body", "body": b"3456789"})
        await send({"type": "http.response.body", "body": b"0123456789"})
    except RuntimeError as exc:
        EVENTS.append(("too_long", str(exc)))
        raise


async def too_short(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
    )
    await send({"type": "http.response.body", "body": b"01234"})


async def raise_before(scope: Scope, receive: Receive, send: Send) -> None:
    raise ValueError("boom before the response")


async def raise_after_start(scope: Scope, receive: Receive, send: Send) -> None:
    """Raises after http.response.start but before any body: nothing was written yet."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise ValueError("boom after start")


async def raise_after_body(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("boom in the middle")


async def invalid_message(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.body", "body": b"body before start"})


async def invalid_status(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 999, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def bad_header(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"x-injected", b"a\r\nset-cookie: evil=1")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"x"})


async def no_response(scope: Scope, receive: Receive, send: Send) -> None:
    return None


async def custom_server_header(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"server", b"custom"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def slow(scope: Scope, receive: Receive, send: Send) -> None:
    query = _query(scope)
    await asyncio.sleep(float(query.get("s", "0.2")))
    await _respond(send, 200, query.get("tag", "slow").encode())


async def wait_disconnect(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the body, then wait for http.disconnect; then try to send (must raise)."""
    await read_body(receive)
    EVENTS.append(("waiting", None))
    message = await receive()
    EVENTS.append(("received", message["type"]))
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
    except OSError as exc:
        EVENTS.append(("send_raised", type(exc).__name__))
        raise


async def concurrent_receive(scope: Scope, receive: Receive, send: Send) -> None:
    """Two tasks wait on receive() at once; one is cancelled; the other still sees the end."""
    await read_body(receive)
    cancelled = asyncio.ensure_future(receive())
    watcher = asyncio.ensure_future(receive())
    await asyncio.sleep(0.05)
    cancelled.cancel()
    EVENTS.append(("watching", None))
    message = await watcher
    EVENTS.append(("watcher_got", message["type"]))


async def no_read(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers without reading the request body (the server must drain or close)."""
    await _respond(send, 200, b"did not read")


async def slow_reader(scope: Scope, receive: Receive, send: Send) -> None:
    """Waits before reading the body, so the client must be held back meanwhile."""
    await asyncio.sleep(float(_query(scope).get("s", "1.0")))
    body, sizes = await read_body(receive)
    report = {"bytes": len(body), "messages": len(sizes), "largest": max(sizes)}
    await _respond(send, 200, json.dumps(report).encode(), b"application/json")


async def big(scope: Scope, receive: Receive, send: Send) -> None:
    size = int(_query(scope).get("n", "1000000"))
    piece = b"x" * 65536
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % size)],
        }
    )
    sent = 0
    while sent < size:
        chunk = piece[: size - sent]
        sent += len(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": sent < size})


async def background(scope: Scope, receive: Receive, send: Send) -> None:
    """Responds, then keeps working (like a Starlette background task)."""
    await _respond(send, 200, b"done")
    await asyncio.sleep(0.05)
    EVENTS.append(("background_done", None))


ROUTES: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
    "/": hello,
    "/clock": clock,
    "/echo": echo,
    "/stream": stream,
    "/status": status,
    "/too-long": too_long,
    "/too-short": too_short,
    "/raise-before": raise_before,
    "/raise-after-start": raise_after_start,
    "/raise-after-body": raise_after_body,
    "/invalid-message": invalid_message,
    "/invalid-status": invalid_status,
    "/bad-header": bad_header,
    "/no-response": no_response,
    "/custom-server-header": custom_server_header,
    "/slow": slow,
    "/wait-disconnect": wait_disconnect,
    "/no-read": no_read,
    "/concurrent-receive": concurrent_receive,
    "/slow-reader": slow_reader,
    "/big": big,
    "/background": background,
}


def create_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """For --factory tests."""
    return app
