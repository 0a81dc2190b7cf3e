"""The app of the accuracy suite: each route spends its time in one known place.

    GET  /hello               a few bytes: kernel and server only
    GET  /sleep?ms=N          awaits N ms in the app (the app stage's ground truth)
    GET  /burn?ms=N&log=F     answers at once, then burns N ms of CPU on the event loop
                              (holds it: the loop-wait ground truth) and appends the burn's
                              "START END" (CLOCK_MONOTONIC ns) to the file F
    GET  /download?bytes=N    N bytes in one body message (the send stage under a slow reader)
    POST /upload              reads the whole body, answers its size (the body stage)

Raw ASGI, so what is measured is the server and the kernel, not a framework.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _respond(send: Send, body: bytes, status: int = 200) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    if path == "/sleep":
        await asyncio.sleep(float(query["ms"]) / 1000)
        await _respond(send, b"slept\n")
    elif path == "/burn":
        await _respond(send, b"burning\n")
        log = os.open(query["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        start = time.monotonic_ns()  # opened first: after the burn only one write remains
        until = start + int(float(query["ms"]) * 1_000_000)
        now = start
        while now < until:
            now = time.monotonic_ns()
        os.write(log, f"{start} {now}\n".encode())
        os.close(log)
    elif path == "/download":
        await _respond(send, b"x" * int(query["bytes"]))
    elif path == "/upload":
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await _respond(send, f"{size}\n".encode())
    else:
        await _respond(send, b"hello\n")


async def slow_start(scope: Scope, receive: Receive, send: Send) -> None:
    """`app`, behind a lifespan startup that takes 1.5 s (a model or pool loading)."""
    if scope["type"] != "lifespan":
        await app(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await asyncio.sleep(1.5)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
