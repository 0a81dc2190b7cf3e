"""The example app of `reqtrace demo`: endpoints that spend their time in different places.

A raw ASGI 3 app with no framework, so the demo needs nothing beyond reqtrace itself:

    GET  /           fast: a few bytes, the kernel and the server dominate
    GET  /slow       awaits 20 ms: the app stage grows, the loop stays free
    GET  /cpu        burns ~5 ms of CPU in the loop: the app stage grows, others wait
    GET  /large      1 MiB response: several send syscalls, the send stage grows
    POST /upload     reads the whole body: several segments and recv calls
    GET  /error      raises: the server answers 500
    GET  /json       a small JSON document
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

LARGE_BODY = b"reqtrace " * (1 << 20 // 9) + b"\n"
SLOW_SECONDS = 0.020
CPU_SECONDS = 0.005


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _burn_cpu(seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += sum(i * i for i in range(200))
    return n


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    text = b"text/plain"
    if path == "/":
        await _respond(send, 200, b"hello from reqtrace\n", text)
    elif path == "/slow":
        await asyncio.sleep(SLOW_SECONDS)
        await _respond(send, 200, b"slept 20 ms\n", text)
    elif path == "/cpu":
        _burn_cpu(CPU_SECONDS)
        await _respond(send, 200, b"burned 5 ms of CPU\n", text)
    elif path == "/large":
        await _respond(send, 200, LARGE_BODY, text)
    elif path == "/upload" and method == "POST":
        body = await _read_body(receive)
        await _respond(send, 200, f"received {len(body)} bytes\n".encode(), text)
    elif path == "/error":
        raise RuntimeError("the demo app's /error endpoint fails on purpose")
    elif path == "/json":
        document = json.dumps({"service": "reqtrace demo", "ok": True}).encode()
        await _respond(send, 200, document, b"application/json")
    else:
        await _respond(send, 404, b"not found\n", text)
