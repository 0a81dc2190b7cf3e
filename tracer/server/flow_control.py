"""Back-pressure in both directions for one connection.

Reading: the server stops reading from a client while the app has not taken the request
body it already holds (above `REQUEST_BODY_HIGH_WATER` bytes) or while pipelined requests
wait their turn, so a fast client cannot make the server buffer without bound.

Writing: the transport calls pause_writing() when its buffer is over its high-water mark;
the app's next `send` then waits in `drain()` until resume_writing(), so a slow client
cannot make the server buffer a streaming response without bound.
"""

from __future__ import annotations

import asyncio

REQUEST_BODY_HIGH_WATER = 65536
"""Bytes of request body held for the app before the server stops reading the socket."""


class FlowControl:
    """Pause/resume state of one transport; idempotent so callers need not track it."""

    __slots__ = ("_drain_waiter", "_transport", "read_paused", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        """Writable again (or the connection is gone): let a waiting `send` continue."""
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport takes more data; returns at once if it already does."""
        if not self.write_paused:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(waiter)
