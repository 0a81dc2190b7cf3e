"""One HTTP request/response cycle: the ASGI `receive`/`send` pair the app gets for a request.

The protocol (protocol.py) parses bytes and creates one `RequestCycle` per request when its
headers are complete; the cycle owns everything after that: the request body handed to the
app, the response framing, and what happens when the app misbehaves.

Like uvicorn's RequestResponseCycle, the cycle is handed its collaborators when it is made
and never reaches back into the connection: its timing stamps list, and a `CycleLink` the
connection made once for all its cycles: the transport to write to, the connection's flow
control, the event loop, the shared server state (for the Date/Server lines current when
the response starts), and five callbacks: response complete, app task finished, the app
waits for body, the app took the body, and close the connection (the app failed after its
response began, or was cancelled).

Response framing, decided once at `http.response.start`:
- the app gave `content-length`: the body is counted; too many bytes is an error before they
  are written, too few is an error at the end; either way the connection is closed;
- HEAD, 204 and 304: no body goes out, whatever the app sends;
- otherwise HTTP/1.1 gets `transfer-encoding: chunked`, HTTP/1.0 gets the body delimited by
  closing the connection (1.0 clients do not understand chunked).
The status line and headers are held until the first body message and written together
with it: one write, one send syscall per small response (ASGI allows it: servers "need not
flush" `http.response.start` before the first body event).

Misbehaving apps: an exception or an invalid message before anything was written gets a
500 and a closed connection; after bytes went out the connection is closed (the client sees
a truncated response, which is the truth). `send` after the client left raises
`ClientDisconnected` (an OSError, ASGI HTTP spec 2.4) and is not logged as an app error.

Timing hooks: when on (`self.timed`), the cycle stamps `time.monotonic_ns()` into
`self.stamps`, a list preallocated with one slot per RequestTiming timestamp field, in the
dataclass order (STAMP_* below): the protocol fills first byte, headers done and body done,
the cycle app called, response start, app returned and response done (the stamp of the last
write). timing.py splices the list into the record tuple once, at the end. When off,
none of this exists: no list, no clock reads.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from time import monotonic_ns
from typing import TYPE_CHECKING, Any

from tracer.server.flow_control import REQUEST_BODY_HIGH_WATER, FlowControl
from tracer.server.http_errors import CONTINUE_100, STATUS_LINES, error_response

if TYPE_CHECKING:
    from tracer.server.state import ServerState

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[object]]  # object: we check it is None
CycleCallback = Callable[["RequestCycle"], None]

logger = logging.getLogger("reqtrace.server")
access_logger = logging.getLogger("reqtrace.access")

# Slots of `RequestCycle.stamps`, in RequestTiming field order (0: did not happen).
STAMP_FIRST_BYTE, STAMP_HEADERS_DONE, STAMP_BODY_DONE, STAMP_APP_CALLED = 0, 1, 2, 3
STAMP_RESPONSE_START, STAMP_APP_RETURNED, STAMP_RESPONSE_DONE = 4, 5, 6

MAX_CHUNK_ENTRIES = 1024
"""RequestTiming.chunks keeps one entry per write up to this many; later writes are added
to the last entry (its timestamp becomes the latest write's), so a response streamed for
hours costs a bounded record."""

# Body framing modes, fixed at http.response.start.
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3

# Header names the server must look at; all others are copied through untouched.
_SPECIAL_NAMES = frozenset(
    (b"content-length", b"transfer-encoding", b"connection", b"date", b"server")
)
# Header names are RFC 9110 tokens; a valid name is remembered (lower-cased) so checking it
# costs one dict lookup per header. Bounded: an app inventing names cannot grow it forever.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CHECKED_NAMES: dict[bytes, bytes] = {}
_CHECKED_NAMES_MAX = 4096
# All "name: value\r\n" lines of a response, checked with one regex call: no control
# characters in values except tab. With exactly one LF per line, no value hides a CRLF.
_VALID_HEADER_BLOCK = re.compile(rb"(?:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_DIGITS = re.compile(rb"[0-9]{1,18}")


class ClientDisconnected(OSError):
    """`send` was called after the client went away (ASGI HTTP spec 2.4)."""


class CycleLink:
    """What a connection hands each of its request cycles; made once per connection.

    One object rather than eight constructor arguments: building a cycle is per request.
    """

    __slots__ = (
        "close_connection",
        "flow",
        "loop",
        "on_body_consumed",
        "on_body_wanted",
        "on_finished",
        "on_response",
        "server_state",
        "transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        flow: FlowControl,
        loop: asyncio.AbstractEventLoop,
        server_state: ServerState,
        on_response: CycleCallback,
        on_finished: CycleCallback,
        on_body_wanted: CycleCallback,
        on_body_consumed: CycleCallback,
        close_connection: Callable[[str], None],
    ) -> None:
        self.transport = transport
        self.flow = flow
        self.loop = loop
        self.server_state = server_state  # its default_head: the Date/Server lines of now
        self.on_response = on_response  # the last byte of the response is written
        self.on_finished = on_finished  # the app task returned
        self.on_body_wanted = on_body_wanted  # the app waits for more body
        self.on_body_consumed = on_body_consumed  # the app took the buffered body
        self.close_connection = close_connection  # close(reason): it cannot carry on


class RequestCycle:
    """The ASGI side of one request: `receive`, `send`, and running the app."""

    __slots__ = (
        "body_final_sent",
        "body_mode",
        "body_parts",
        "body_size",
        "chunks",
        "disconnected",
        "expect_100",
        "flow",
        "head",
        "http11",
        "is_head",
        "keep_alive",
        "length_left",
        "link",
        "more_body",
        "outcome",
        "request_body_bytes",
        "response_bytes",
        "response_complete",
        "response_started",
        "scope",
        "seq",
        "stamps",
        "status",
        "target",
        "task",
        "timed",
        "transport",
        "waiter",
    )

    def __init__(
        self,
        scope: Scope,
        target: bytes,
        keep_alive: bool,
        http11: bool,
        expect_100: bool,
        link: CycleLink,
        stamps: list[int] | None,
        seq: int,
    ) -> None:
        self.link = link
        self.transport = link.transport  # the two used on every request, kept at hand
        self.flow = link.flow
        self.scope = scope
        self.target = target  # request target as received (path and query), for logs/hooks
        self.keep_alive = keep_alive
        self.http11 = http11
        self.is_head = scope["method"] == "HEAD"
        self.expect_100 = expect_100  # the client waits for "100 Continue" before the body
        self.body_parts: list[bytes] | None = None
        self.body_size = 0
        self.more_body = True  # the parser has not seen the end of the request body yet
        self.body_final_sent = False  # the app got the http.request with more_body False
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.head: bytes | None = None  # status line + headers, held until the first body
        self.status = 0
        self.task: asyncio.Task[None] | None = None
        self.outcome = "ok"
        self.timed = stamps is not None
        if stamps is not None:  # [first byte, headers done, 0...]: the caller's two stamps
            self.seq = seq
            self.stamps = stamps
            self.chunks: list[tuple[int, int]] = []
            self.request_body_bytes = 0
            self.response_bytes = 0

    # Running the app ------------------------------------------------------------------
    async def run_asgi(self, app: ASGIApp) -> None:
        """Call the app and turn whatever it does wrong into a 500 or a closed connection."""
        if self.timed:
            self.stamps[STAMP_APP_CALLED] = monotonic_ns()
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:  # the app's failure must never kill the server
            self._app_failed(exc)
        else:
            if result is not None:
                logger.error("ASGI callable should return None, but returned %r.", result)
            if not self.response_started:
                if not self.disconnected:
                    logger.error("ASGI callable returned without starting a response.")
                    self._fail_response("app_error")
            elif not self.response_complete and not self.disconnected:
                logger.error("ASGI callable returned without completing the response.")
                self._fail_response("incomplete_response")
        finally:
            if self.timed:
                self.stamps[STAMP_APP_RETURNED] = monotonic_ns()
            self.link.on_finished(self)

    def _app_failed(self, exc: BaseException) -> None:
        if self.disconnected or isinstance(exc, ClientDisconnected):
            if self.outcome == "ok":
                self.outcome = "client_disconnect"
            logger.debug("client went away while the app was running: %r", exc)
            return
        if isinstance(exc, asyncio.CancelledError):
            self.outcome = "cancelled"
            self._close_connection()
            return
        logger.error("Exception in ASGI application", exc_info=exc)
        self._fail_response("app_error")

    def _fail_response(self, outcome: str) -> None:
        """500 if nothing went out yet (the held head counts as nothing), else close."""
        self.outcome = outcome
        if self.transport.is_closing():
            return
        if not self.response_started or self.head is not None:
            self.response_started = True
            self.head = None
            self.status = 500
            self.keep_alive = False
            self._write(error_response(500, self.link.server_state.default_head))
            self._complete()
        else:
            self._close_connection()

    def _close_connection(self) -> None:
        self.keep_alive = False
        self.link.close_connection("server_closed")

    def abandon(self, status: int, detail: str, outcome: str) -> bool:
        """The server gives up on this request (bad or stalled body, or never started).

        If `status` is set and nothing went out yet, answer it with that error; True then.
        The app, if running, sees http.disconnect and its sends raise ClientDisconnected.
        """
        self.outcome = outcome
        answered = False
        if status and not self.response_started and not self.transport.is_closing():
            self.response_started = True
            self.status = status
            self.keep_alive = False
            self._write(error_response(status, self.link.server_state.default_head, detail))
            self.response_complete = True
            answered = True
        self.disconnected = True
        self.wake()
        return answered

    # ASGI receive ---------------------------------------------------------------------
    async def receive(self) -> Message:
        """The next piece of the request body, or http.disconnect once there is no more."""
        if self.expect_100 and not self.response_started:
            self._send_100_continue()
        while True:
            if self.disconnected or self.response_complete:
                return {"type": "http.disconnect"}
            if not self.body_final_sent:
                parts = self.body_parts
                more_body = self.more_body
                if parts or not more_body:
                    if parts:
                        body = parts[0] if len(parts) == 1 else b"".join(parts)
                        self.body_parts = None
                        self.body_size = 0
                        if more_body:
                            self.link.on_body_consumed(self)
                    else:
                        body = b""
                    if not more_body:
                        self.body_final_sent = True
                    return {"type": "http.request", "body": body, "more_body": more_body}
            waiter = self.waiter
            if waiter is None:
                waiter = self.waiter = self.link.loop.create_future()
                self.link.on_body_wanted(self)
            # Shared by concurrent receive() calls (a disconnect watcher and a body reader);
            # shielded so that cancelling one of them does not cancel the others' wait.
            await asyncio.shield(waiter)

    def wake(self) -> None:
        """Something changed for waiting `receive` calls (body, end of body, disconnect)."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def drop_body(self) -> None:
        """The connection is gone: the body held for the app will never be handed over."""
        self.body_parts = None
        self.body_size = 0

    def add_body(self, body: bytes) -> bool:
        """Hold a piece of request body for the app; True when above the high-water mark."""
        if self.body_parts is None:
            self.body_parts = [body]
        else:
            self.body_parts.append(body)
        self.body_size += len(body)
        if self.timed:
            self.request_body_bytes += len(body)
        self.wake()
        return self.body_size > REQUEST_BODY_HIGH_WATER

    def _send_100_continue(self) -> None:
        self.expect_100 = False
        if self.more_body and not self.body_parts and not self.transport.is_closing():
            self._write(CONTINUE_100)

    # ASGI send ------------------------------------------------------------------------
    async def send(self, message: Message) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            raise ClientDisconnected("the client closed the connection")
        if not self.response_started:
            self._start_response(message)
        elif not self.response_complete:
            self._send_body(message)
        else:
            raise RuntimeError(
                f"Unexpected ASGI message {message.get('type')!r} after the response completed."
            )

    def _start_response(self, message: Message) -> None:
        if message["type"] != "http.response.start":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.start', but got {message['type']!r}."
            )
        status = message["status"]
        status_line = STATUS_LINES.get(status) if type(status) is int else None
        if status_line is None:
            raise RuntimeError(f"Invalid HTTP status {status!r} in http.response.start.")
        if self.timed:
            self.stamps[STAMP_RESPONSE_START] = monotonic_ns()
        keep_alive = self.keep_alive
        length = -1
        app_closes = False
        replaced_defaults = False
        lines: list[bytes] = []
        try:
            for raw_name, value in message.get("headers", ()):
                name = _CHECKED_NAMES.get(raw_name) or _checked_name(raw_name)
                if name in _SPECIAL_NAMES:
                    if name == b"content-length":
                        length = _content_length(value, length)
                    elif name == b"transfer-encoding":
                        continue  # the server frames the body itself (ASGI: must ignore)
                    elif name == b"connection":
                        tokens = [token.strip() for token in value.lower().split(b",")]
                        if b"close" in tokens:
                            keep_alive = False
                            app_closes = True
                        elif b"keep-alive" in tokens:
                            continue  # the server decides whether the connection persists
                    else:
                        replaced_defaults = True
                lines.append(name + b": " + value + b"\r\n")
            block = b"".join(lines)
        except (TypeError, AttributeError, ValueError) as exc:
            raise RuntimeError(f"Invalid headers in http.response.start: {exc}") from None
        if _VALID_HEADER_BLOCK.fullmatch(block) is None or block.count(b"\n") != len(lines):
            raise RuntimeError("Invalid header value in http.response.start.")
        self.response_started = True
        self.status = status
        if self.is_head or status == 204 or status == 304:
            self.body_mode = NO_BODY
        elif length >= 0:
            self.body_mode = LENGTH
            self.length_left = length
        elif self.http11:
            self.body_mode = CHUNKED
            block += b"transfer-encoding: chunked\r\n"
        else:
            self.body_mode = UNTIL_CLOSE
            keep_alive = False
        if keep_alive:
            if not self.http11:
                block += b"connection: keep-alive\r\n"
        elif not app_closes:
            block += b"connection: close\r\n"
        self.keep_alive = keep_alive
        default_head = self.link.server_state.default_head
        if replaced_defaults:
            default_head = _without_replaced(default_head, lines)
        self.head = status_line + default_head + block + b"\r\n"

    def _send_body(self, message: Message) -> None:
        if message["type"] != "http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.body', but got {message['type']!r}."
            )
        body = message.get("body", b"")
        if body.__class__ is not bytes:
            try:
                body = bytes(body)
            except TypeError:
                raise RuntimeError("http.response.body 'body' must be bytes.") from None
        more_body = message.get("more_body", False)
        mode = self.body_mode
        if mode == LENGTH:
            left = self.length_left - len(body)
            if left < 0:
                raise RuntimeError("Response content longer than Content-Length.")
            self.length_left = left
            data = body
        elif mode == CHUNKED:
            if body:
                data = b"%x\r\n%b\r\n0\r\n\r\n" if not more_body else b"%x\r\n%b\r\n"
                data = data % (len(body), body)
            else:
                data = b"" if more_body else b"0\r\n\r\n"
        elif mode == UNTIL_CLOSE:
            data = body
        else:
            data = b""  # HEAD, 204, 304: whatever the app sends stays here
        head = self.head
        if head is not None:
            self.head = None
            data = head + data
        if data:
            self._write(data)
        if not more_body:
            if mode == LENGTH and self.length_left:
                raise RuntimeError("Response content shorter than Content-Length.")
            self._complete()

    def _write(self, data: bytes) -> None:
        if self.timed:
            now = self.stamps[STAMP_RESPONSE_DONE] = monotonic_ns()
            chunks = self.chunks
            if len(chunks) < MAX_CHUNK_ENTRIES:
                chunks.append((now, len(data)))
            else:  # an endless stream must not grow the record without bound
                chunks[-1] = (now, chunks[-1][1] + len(data))
            self.response_bytes += len(data)
        self.transport.write(data)

    def _complete(self) -> None:
        self.response_complete = True
        if self.waiter is not None:
            self.wake()
        self.link.on_response(self)

    # Logs and hooks -------------------------------------------------------------------
    def log_access(self) -> None:
        client = self.scope["client"]
        access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            "%s:%d" % client if client else "-",  # noqa: UP031 (a tuple of two)
            self.scope["method"],
            self.target.decode("latin-1"),
            self.scope["http_version"],
            self.status,
        )


def _checked_name(name: bytes) -> bytes:
    """The lower-cased header name, or ValueError if it is not a token."""
    if name.__class__ is not bytes or _TOKEN.fullmatch(name) is None:
        raise ValueError(f"invalid header name {name!r}")
    lowered = name.lower()
    if len(_CHECKED_NAMES) < _CHECKED_NAMES_MAX:
        _CHECKED_NAMES[name] = lowered
    return lowered


def _content_length(value: bytes, previous: int) -> int:
    if _DIGITS.fullmatch(value) is None:
        raise ValueError(f"content-length {value!r} is not a number")
    length = int(value)
    if previous >= 0 and previous != length:
        raise ValueError("two different content-length headers")
    return length


def _without_replaced(default_head: bytes, lines: list[bytes]) -> bytes:
    """The default date/server lines minus those the app sent itself."""
    replaced = {line.split(b":", 1)[0] for line in lines}
    kept = [
        line + b"\r\n"
        for line in default_head.split(b"\r\n")
        if line and line.split(b":", 1)[0] not in replaced
    ]
    return b"".join(kept)
