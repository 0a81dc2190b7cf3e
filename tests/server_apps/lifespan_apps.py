"""Apps that speak (or fail at) the ASGI lifespan protocol.

`with_state` logs startup/shutdown to EVENTS and, when the REQTRACE_TEST_LIFESPAN_LOG
environment variable names a file, appends to it (for tests that run the server in a
subprocess and check that shutdown ran).
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

EVENTS: list[str] = []


def _log(event: str) -> None:
    EVENTS.append(event)
    path = os.environ.get("REQTRACE_TEST_LIFESPAN_LOG")
    if path:
        with open(path, "a") as log:
            log.write(event + "\n")


async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["db"] = "connected"
                scope["state"]["shared"] = {"requests": 0}
                _log("startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                _log("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    state = scope["state"]
    state["shared"]["requests"] += 1  # shallow copy: the shared object is shared
    report = {"db": state.get("db"), "leaked": state.get("leaked", False)}
    state["leaked"] = True  # a key set by one request must not appear in the next
    body = json.dumps(report).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def startup_fails(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database is unreachable"})
        return
    raise AssertionError("must not serve requests")


async def startup_raises(scope: Scope, receive: Receive, send: Send) -> None:
    """Raises on the lifespan scope: 'unsupported' under --lifespan auto, fatal under on."""
    if scope["type"] == "lifespan":
        raise RuntimeError("no lifespan here")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})
