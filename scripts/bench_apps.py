"""ASGI apps the benchmarks serve (the same app for every server compared)."""

from __future__ import annotations

from typing import Any

HELLO_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The classic hello-world: one small response, no body reading."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HELLO_HEADERS})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
