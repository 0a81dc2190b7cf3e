"""One connection's timing hooks, shared by the uvicorn protocol subclasses.

Theory of operation. uvicorn's protocols call the subclass's overrides at the moments the
bundled server stamps (tracer/server/protocol.py and cycle.py); each override stores
`monotonic_ns()` and hands over to uvicorn's own code:

    data_received           -> received()    the bytes of a request head begin here
    head begins (httptools: on_message_begin; h11: the first read after the last head)
    head parsed (httptools: on_headers_complete; h11: next_event() gives a Request)
                            -> head_done()   a RequestSlot, queued for the app call
    body bytes, body done   -> body(), body_done()
    the app is called       -> app()         uvicorn calls `protocol.app`; we are that app:
                                             the slot is taken, the real app awaited
    transport.write         -> TimedTransport.write: response start (the status line of a
                                             final response), each chunk, response done
    the app returns         -> finish()      ONE RequestTiming wire record (if the app raised
                                             before answering: once its task ends, after
                                             uvicorn's own 500)
    connection_lost         -> closed()      the ConnectionClosed record

A response written while no app call is in progress is uvicorn's own answer: 400 for a
malformed request (before or after its head was parsed), 503 over --limit-concurrency
(uvicorn then calls its own `service_unavailable`, not the app). It is recorded as the
bundled server records the answers it gives itself (timing.request_refused), with the
request's head if it was parsed.

A slot's lists are never touched after its record is emitted (the pipe marshals them up to
20 ms later): `finish` marks it done and the writer stops pointing at it.

uvicorn answers one request of a connection at a time (pipelined requests wait for the
response before theirs starts), so the writes belong to the request whose app was called
last. Slots are matched to app calls in order; a slot whose request never reached the app
(an upgrade, uvicorn's own 503 under --limit-concurrency) is dropped when a later one is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from time import monotonic_ns
from typing import Any

from tracer.hosted.hook_state import HostedHooks
from tracer.server import timing

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

# Slots of RequestSlot.stamps, in RequestTiming field order (0: did not happen).
FIRST_BYTE, HEADERS_DONE, BODY_DONE, APP_CALLED, RESPONSE_START, APP_RETURNED, RESPONSE_DONE = (
    range(7)
)
UNANSWERED = "unanswered"  # the app returned without starting a response (until its end)
MAX_CHUNK_ENTRIES = 64  # as the bundled server: an endless stream adds to the last entry


class RequestSlot:
    """One request's stamps and counts, from its head to its app's end."""

    __slots__ = (
        "body_bytes",
        "chunks",
        "done",
        "h11_request",
        "outcome",
        "owner",
        "response_bytes",
        "scope",
        "seq",
        "stamps",
        "status",
    )

    def __init__(self, owner: ConnectionTiming, scope: Any, seq: int, begin_ns: int) -> None:
        self.owner = owner
        self.scope = scope  # None until the app call (h11 makes the scope after the event)
        self.h11_request: Any = None  # with h11: its Request event, should uvicorn answer it
        self.seq = seq
        self.stamps = [begin_ns, monotonic_ns(), 0, 0, 0, 0, 0]
        self.chunks: list[tuple[int, int]] = []
        self.body_bytes = 0
        self.response_bytes = 0
        self.status = 0
        self.outcome = "ok"
        self.done = False

    def finish(self, _task: object = None) -> None:
        """The app's task ended: emit the record once, then never touch the lists again."""
        if self.done:
            return
        self.done = True
        self.owner.finished(self)


class ConnectionTiming:
    """The hooks of one uvicorn connection (composition: the protocol subclass owns one)."""

    __slots__ = (
        "_app",
        "close_reason",
        "head_ns",
        "hook_ids",
        "hooks",
        "reading",
        "reading_body",
        "requests",
        "responding",
        "rx_ns",
        "transport",
        "waiting",
    )

    def __init__(self, hooks: HostedHooks, app: ASGIApp) -> None:
        self.hooks = hooks
        self._app = app
        self.hook_ids: timing.HookIds = (0, 0, 0, 0)
        self.transport: asyncio.Transport | None = None
        self.rx_ns = 0  # the last data_received
        self.head_ns = 0  # the read that began the head being parsed (0: none yet)
        self.reading_body = False
        self.reading: RequestSlot | None = None  # the request whose head/body is parsed
        self.waiting: deque[RequestSlot] = deque()  # heads parsed, app not called yet
        self.responding: RequestSlot | None = None  # the request whose response is written
        self.requests = 0
        self.close_reason = ""

    # -- the connection -----------------------------------------------------------------------

    def wrap(self, transport: asyncio.Transport) -> asyncio.Transport:
        """The transport uvicorn's code gets: writes go through us (TimedTransport)."""
        self.transport = transport
        return TimedTransport(transport, self)  # type: ignore[return-value]

    def opened(self, client: Any, server: Any) -> None:
        """connection_made, after uvicorn's own: the ConnectionOpened record."""
        hooks = self.hooks
        fd = -1
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                fd = sock.fileno()
        self.hook_ids = (hooks.pid, hooks.tid, fd, hooks.next_conn_id())
        local = (str(server[0]), int(server[1] or 0)) if server else ("", 0)
        peer = (str(client[0]), int(client[1])) if client else None
        hooks.emit(timing.connection_opened(self.hook_ids, peer, local))

    def closed(self, exc: BaseException | None) -> None:
        reason = self.close_reason or ("client_closed" if exc is None else f"error: {exc}")
        self.hooks.emit(timing.connection_closed(self.hook_ids, self.requests, reason, 0))

    # -- reading ------------------------------------------------------------------------------

    def received(self) -> None:
        now = self.rx_ns = monotonic_ns()
        if not self.head_ns and not self.reading_body:
            self.head_ns = now

    def begin(self) -> None:
        """httptools' on_message_begin: this request's first byte came with the last read."""
        self.head_ns = self.rx_ns

    def head_done(self, scope: Any, h11_request: Any = None) -> None:
        self.requests += 1
        slot = RequestSlot(self, scope, self.requests, self.head_ns or self.rx_ns)
        slot.h11_request = h11_request
        self.head_ns = 0
        self.reading_body = True
        self.reading = slot
        self.waiting.append(slot)

    def body(self, size: int) -> None:
        slot = self.reading
        if slot is not None and not slot.done:
            slot.body_bytes += size

    def body_done(self) -> None:
        self.reading_body = False
        slot, self.reading = self.reading, None
        if slot is not None and not slot.done:
            slot.stamps[BODY_DONE] = monotonic_ns()

    # -- the app ------------------------------------------------------------------------------

    def _take(self, scope: Any) -> RequestSlot | None:
        waiting = self.waiting
        while waiting:
            slot = waiting.popleft()
            if slot.scope is None or slot.scope is scope:
                return slot
        return None

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        """What uvicorn calls as the app: the request's slot taken, the real app awaited."""
        slot = self._take(scope)
        if slot is None:  # nothing parsed for it (cannot happen with uvicorn's protocols)
            await self._app(scope, receive, send)
            return
        slot.scope = scope
        slot.stamps[APP_CALLED] = monotonic_ns()
        self.responding = slot
        try:
            await self._app(scope, receive, send)
        except BaseException:
            slot.outcome = "app_error"
            raise
        else:
            if slot.status == 0:  # returned without answering
                slot.outcome = UNANSWERED
        finally:
            slot.stamps[APP_RETURNED] = monotonic_ns()
            task = asyncio.current_task() if slot.status == 0 else None
            if task is not None:  # uvicorn answers 500 after this: its writes are the slot's
                task.add_done_callback(slot.finish)
            else:
                slot.finish()

    def answered_itself(self, status: int, size: int) -> None:
        """uvicorn wrote a final response with no app call in progress (see the module)."""
        slot = self.waiting.popleft() if self.waiting else None
        if slot is None:  # the head never parsed: a request of its own, from its first byte
            self.requests += 1
            seq, begin_ns, head_ns, scope = self.requests, self.head_ns or self.rx_ns, 0, None
        else:
            seq, begin_ns, head_ns, scope = slot.seq, slot.stamps[0], slot.stamps[1], slot.scope
            if self.reading is slot:
                self.reading = None
        self.head_ns = 0
        self.reading_body = False
        method, target, version, headers = _request_head(scope, slot)
        if headers is not None and any(
            name == b"upgrade" and value.lower() == b"websocket" for name, value in headers
        ):
            return  # a websocket handshake refused: websockets are served, not timed
        outcome = (
            "overloaded" if status == 503 else "bad_request" if status < 500 else "server_error"
        )
        hooks = self.hooks
        hooks.emit(
            timing.request_refused(
                self.hook_ids,
                seq,
                method,
                target,
                version,
                begin_ns,
                head_ns,
                headers if hooks.capture_headers else None,
                status,
                outcome,
                size,
            )
        )

    def finished(self, slot: RequestSlot) -> None:
        if self.responding is slot:
            self.responding = None
        if self.reading is slot:
            self.reading = None
        transport = self.transport
        keep_alive = transport is not None and not transport.is_closing()
        outcome = slot.outcome
        if outcome == UNANSWERED:  # as the bundled server: an app error, if answered
            outcome = "app_error" if slot.status else "client_disconnect"
        elif outcome == "ok" and slot.status == 0:
            outcome = "client_disconnect"
        scope = slot.scope
        target = _scope_target(scope)
        self.hooks.emit(
            timing.request_timing(
                self.hook_ids,
                slot.seq,
                scope,
                target,
                slot.status,
                slot.stamps,
                slot.chunks,
                slot.body_bytes,
                slot.response_bytes,
                keep_alive,
                outcome,
                self.hooks.capture_headers,
            )
        )


def _scope_target(scope: Any) -> bytes:
    """The request target as received (path and query) from an ASGI scope."""
    target: bytes = scope.get("raw_path") or scope.get("path", "").encode("latin-1")
    query = scope.get("query_string")
    return target + b"?" + query if query else target


def _request_head(scope: Any, slot: RequestSlot | None) -> tuple[str, bytes, str, Any]:
    """(method, target, HTTP version, headers) of a request uvicorn answered itself, from
    its scope (httptools) or h11's Request event; empty when its head was never parsed."""
    if scope is not None:
        return scope["method"], _scope_target(scope), scope["http_version"], scope["headers"]
    event = slot.h11_request if slot is not None else None
    if event is not None:
        method, version = event.method.decode("ascii"), event.http_version.decode("ascii")
        return method, bytes(event.target), version, list(event.headers)
    return "", b"", "", None


class TimedTransport:
    """The connection's transport as uvicorn's code sees it: every write is stamped.

    Everything but `write` is the real transport's (bound once per connection, or looked up
    through __getattr__ for what uvicorn rarely uses).
    """

    __slots__ = (
        "_timing",
        "_transport",
        "_write",
        "get_extra_info",
        "is_closing",
        "pause_reading",
        "resume_reading",
    )

    def __init__(self, transport: asyncio.Transport, owner: ConnectionTiming) -> None:
        self._transport = transport
        self._timing = owner
        self._write = transport.write
        self.get_extra_info = transport.get_extra_info
        self.is_closing = transport.is_closing
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading

    def write(self, data: bytes | bytearray | memoryview) -> None:
        slot = self._timing.responding
        if slot is None:
            code = bytes(data[9:12])
            # a final answer: not "100 Continue" nor "101 Switching Protocols"
            if data[:5] == b"HTTP/" and code.isdigit() and int(code) >= 200:
                self._timing.answered_itself(int(code), len(data))
        elif data:
            now = monotonic_ns()
            stamps = slot.stamps
            if not stamps[RESPONSE_START] and data[:5] == b"HTTP/":
                status = int(data[9:12])
                if status >= 200:  # not an interim "100 Continue"
                    stamps[RESPONSE_START] = now
                    slot.status = status
            size = len(data)
            chunks = slot.chunks
            if len(chunks) < MAX_CHUNK_ENTRIES:
                chunks.append((now, size))
            else:
                chunks[-1] = (now, chunks[-1][1] + size)
            slot.response_bytes += size
            stamps[RESPONSE_DONE] = now
        self._write(data)

    def close(self) -> None:
        if not self._timing.close_reason:
            self._timing.close_reason = "server_closed"
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
