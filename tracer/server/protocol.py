"""One HTTP/1.1 connection: an asyncio.Protocol fed by the httptools (llhttp) parser.

Theory of operation. Bytes arrive in `data_received` and go to the parser, which calls
back `on_message_begin`, `on_url`, `on_header`, `on_headers_complete`, `on_body` and
`on_message_complete`. At headers-complete the request is checked (limits, Host, version,
framing), its ASGI scope is built, and a `RequestCycle` (cycle.py) is created and its app
task started - or queued behind the request in flight (pipelining keeps responses in order;
reading pauses while one waits). Anything wrong with the input is answered by the server
itself (http_errors.py) and the connection is closed.

The connection is always in one phase, which decides the one timer it may hold:

    IDLE  no request in progress          -> closed after --timeout-keep-alive
    HEAD  request begun, headers not done -> 408 at first byte + --timeout-request-header
                                             (fixed at the first byte: a client trickling
                                             one byte at a time cannot push it back)
    BODY  headers done, body not done     -> 408/close at the nearest of: silence for
                                             --timeout-request-body; the body's start +
                                             --min-request-body-rate-grace + bytes/rate
                                             (a trickle cannot hold it open); a chunk-size
                                             line or trailer section spanning reads +
                                             --timeout-request-header. The clock runs only
                                             while the server waits on the client: not
                                             while it paused reading, nor while the client
                                             waits for "100 Continue"; it restarts after.
    BUSY  request read, app working       -> no timeout (the app's time is its own)

The timer is lazy: one TimerHandle per connection, re-armed only when it fires early or a
nearer deadline appears, so a busy keep-alive connection costs one clock read per request,
not a timer allocation and cancellation.

Chunked bodies: chunk-size lines and the trailer section are bounded like a head, and
trailer fields are counted, then dropped, never added to scope["headers"] (chunked_framing.py).

The last request on a connection. When a message must be the last one read (HTTP/1.0 with
Transfer-Encoding: faulty framing, RFC 9112 6.1; or MAX_PIPELINED requests already queued)
`last_message` is set, its response closes the connection, and parsing stops after it:
on_message_complete raises _StopParsing, and whatever else the client sent is not read.

Memory. A connection must be freed by reference counting when it closes, not by the next
full garbage collection: the parser holds this object's bound methods and the CycleLink
holds more, so both are let go (`_drop_parser` once nothing more is parsed, `_finish`), a
RejectRequest is kept without its traceback, and no local of data_received refers to an
exception (its traceback would lead back to that frame).

Why a connection ends (ConnectionClosed.reason): client_closed; server_closed (after a
response: the client asked, HTTP/1.0, or the app failed); keep_alive_timeout;
header_timeout; body_timeout; bad_request; overloaded; shutdown; "error: ..." (the OS).

Timing hooks: when the server has a hook sink, `timed` is True and the callbacks store
`time.monotonic_ns()` in slots (first byte, headers done, body done); the cycle adds the
rest and one RequestTiming record is emitted when it ends. When `timed` is False the only
hook work is the `if self.timed` test itself.

Dependencies point one way: this module uses cycle.py, timing.py and state.py; none of them
knows it. A cycle gets the connection's transport, flow control and five callbacks in one
`CycleLink` made per connection; timing.py gets plain values; the shared state sees only the
`Connection` shape (shutdown, abort).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import monotonic_ns
from typing import Any, cast
from urllib.parse import unquote

import httptools

from tracer.server import timing
from tracer.server.chunked_framing import NO_SECTION, ChunkedFraming
from tracer.server.cycle import STAMP_BODY_DONE, CycleLink, RequestCycle
from tracer.server.flow_control import FlowControl
from tracer.server.http_errors import error_response
from tracer.server.request_head import (
    VALID_HOSTS,
    RejectRequest,
    check_host,
    check_transfer_encoding,
    head_size,
    split_target,
)
from tracer.server.state import ServerState

logger = logging.getLogger("reqtrace.server")

IDLE, HEAD, BODY, BUSY = 0, 1, 2, 3
NO_PHASE = -1
LINGER_SECONDS = 2.0  # after an error response, how long to drain a client that keeps sending
MAX_PIPELINED = 64
"""Parsed requests that may wait behind the response in flight. Reading pauses as soon as
one waits, but one read (256 KiB) can hold thousands of tiny requests, each a cycle and a
scope: the one that fills the queue is the last this connection serves (RFC 9112 9.3.2:
the client retries what was not answered)."""
NO_DEADLINE = float("inf")

_WATCHED_HEADERS = frozenset((b"host", b"expect", b"transfer-encoding"))
_METHOD_NAMES = {
    name.encode(): name
    for name in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")
}
_ASGI_VERSION = "3.0"
_SPEC_VERSION = "2.4"


class _StopParsing(Exception):
    """Raised by on_message_complete after the `last_message`: nothing more is parsed."""


class HttpProtocol(asyncio.Protocol):
    """The server side of one TCP or unix-socket connection."""

    __slots__ = (
        "app",
        "begin_ns",
        "chunk_len",
        "client",
        "close_reason",
        "conn_id",
        "cycle",
        "cycle_link",
        "deadline",
        "deadline_phase",
        "expect_100",
        "fd",
        "flow",
        "framing",
        "head_lower",
        "head_upper",
        "headers",
        "headers_done_ns",
        "hook_ids",
        "host_count",
        "ignore_input",
        "last_message",
        "linger",
        "local",
        "loop",
        "lost",
        "lost_ns",
        "parser",
        "pending_reject",
        "phase",
        "pipeline",
        "rate_bytes",
        "rate_start",
        "recv_ns",
        "requests",
        "running",
        "section_deadline",
        "server",
        "state",
        "tasks_running",
        "timed",
        "timer",
        "timer_when",
        "transfer_encoding",
        "transport",
        "url",
    )

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self.app = state.app
        self.timed = state.emit_hook is not None
        self.hook_ids = (0, 0, 0, 0)  # (pid, tid, fd, conn_id) of every hook record
        self.parser = httptools.HttpRequestParser(self)
        # Answer the request in hand even if the client pipelined bytes after "close".
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.flow: FlowControl = None  # type: ignore[assignment]
        self.cycle_link: CycleLink = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.local: tuple[str, int] = ("", 0)
        self.fd = -1
        self.conn_id = 0
        self.cycle: RequestCycle | None = None  # the request being parsed (last created)
        self.running: RequestCycle | None = None  # the request whose response is in flight
        self.pipeline: deque[RequestCycle] | None = None  # parsed, waiting for `running`
        self.pending_reject: RejectRequest | None = None  # to answer once `running` is done
        self.tasks_running = 0
        self.requests = 0
        self.phase = IDLE
        self.deadline = 0.0
        self.deadline_phase = NO_PHASE
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = 0.0
        self.ignore_input = False
        self.last_message = False  # parsing stops after this request (see the docstring)
        self.linger: asyncio.TimerHandle | None = None  # closes a lingering connection
        self.lost = False
        self.lost_ns = 0
        self.close_reason = ""
        self.chunk_len = 0
        self.head_upper = 0
        self.head_lower = 0
        self.recv_ns = 0
        self.begin_ns = 0
        self.headers_done_ns = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.host_count = 0
        self.expect_100 = False
        self.transfer_encoding: bytes | None = None
        config = state.config
        self.framing = ChunkedFraming(config.limit_request_head, config.limit_request_fields)
        self.section_deadline = NO_DEADLINE  # once a chunk-size line or trailers span a read
        self.rate_start = 0.0  # loop time the body clock (re)started
        self.rate_bytes = 0  # bytes received since

    # asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but implement it.
        self.transport = cast(asyncio.Transport, transport)
        state = self.state
        self.flow = FlowControl(self.transport)
        # What every RequestCycle of this connection gets: made once, not per request.
        self.cycle_link = CycleLink(
            self.transport,
            self.flow,
            self.loop,
            state,
            self.response_complete,
            self.cycle_finished,
            self.body_wanted,
            self.body_consumed,
            self.close,
        )
        self.conn_id = state.next_conn_id
        state.next_conn_id += 1
        state.connections.add(self)
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if isinstance(peer, tuple) and peer:
            self.client = (str(peer[0]), int(peer[1]))
        if isinstance(local, tuple) and local:
            self.local = (str(local[0]), int(local[1]))
            self.server = self.local
        elif isinstance(local, str):  # unix socket: ASGI says [path, None]
            self.local = (local, 0)
            self.server = (local, None)
        if self.timed:
            emit = state.emit_hook
            assert emit is not None
            self.hook_ids = (state.pid, state.tid, self.fd, self.conn_id)
            emit(timing.connection_opened(self.hook_ids, self.client, self.local))
        if state.shutting_down:
            self.close("shutdown")
            return
        self._arm(IDLE, self.loop.time() + state.config.timeout_keep_alive)

    def data_received(self, data: bytes) -> None:
        if self.timed:
            self.recv_ns = monotonic_ns()
        if self.ignore_input:
            return
        self.chunk_len = len(data)
        phase = self.phase
        try:
            if phase == HEAD:
                self._feed_open_head(data)
            elif phase == BODY and self.transfer_encoding is not None and self.framing.section:
                self._feed_open_section(data)  # (a chunked message's framing)
            else:
                self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade_ignored()
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)  # not inline: see _parse_failed
            return
        except RejectRequest as reject:
            self.reject(reject)
            return
        phase = self.phase
        if phase == HEAD:
            if self.deadline_phase != HEAD:  # fixed at the first byte, never extended
                self._arm(HEAD, self.loop.time() + self.state.config.timeout_request_header)
        elif phase == BODY and not self.flow.read_paused:
            self._time_body(len(data), self.deadline_phase != BODY)

    def _parse_failed(self, exc: httptools.HttpParserError) -> None:
        """The parser stopped: a callback refused the request or asked to stop, or the bytes
        are not HTTP.

        A method of its own so that no local of data_received refers to the callback's
        exception: its traceback holds the callback's frame, whose caller is data_received's
        frame, and that loop would keep the connection and the bytes it read alive until a
        full garbage collection.
        """
        cause = exc.__context__
        if isinstance(cause, _StopParsing):
            self.ignore_input = True
        elif isinstance(cause, RejectRequest):
            self.reject(cause)
        else:
            if cause is not None:
                logger.error("Error while parsing a request", exc_info=cause)
            self.reject(RejectRequest(400, f"Invalid HTTP request: {exc}"))

    def _feed_open_head(self, data: bytes) -> None:
        """Feed while a head that began in an earlier chunk is still open, bounding its size.

        Bytes of whole chunks received while the head stays open are certainly head bytes
        (`head_lower`); if this chunk could take the head over the limit, feed only up to
        the limit first: a head still open then is too large.
        """
        limit = self.state.config.limit_request_head
        room = limit - self.head_lower
        self.head_upper += len(data)
        if len(data) <= room:
            self.head_lower += len(data)
            self.parser.feed_data(data)
            return
        self.parser.feed_data(data[:room])
        if self.phase == HEAD:
            raise RejectRequest(431, "Request header fields too large")
        self.parser.feed_data(data[room:])

    def _feed_open_section(self, data: bytes) -> None:
        """Feed a read that began in a chunk-size line or trailer section, bounded
        (chunked_framing.py); one that takes a whole read has --timeout-request-header left.
        """
        if self.framing.feed(self.parser, data):
            if self.section_deadline == NO_DEADLINE:
                timeout = self.state.config.timeout_request_header
                self.section_deadline = self.loop.time() + timeout
        else:
            self.section_deadline = NO_DEADLINE

    def eof_received(self) -> bool | None:
        # The client closed its side: the in-flight app sees http.disconnect (as uvicorn).
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for handle in (self.timer, self.linger):  # they hold this object: let it go now
            if handle is not None:
                handle.cancel()
        self.timer = self.linger = None
        if not self.close_reason:
            self.close_reason = "client_closed" if exc is None else f"error: {exc}"
        self.lost_ns = monotonic_ns() if self.timed else 0
        for cycle in self._cycles():
            if not cycle.response_complete:
                cycle.disconnected = True
                if cycle.outcome == "ok":
                    cycle.outcome = "client_disconnect"
            cycle.drop_body()  # receive() says http.disconnect from now on
            cycle.wake()
        pipeline = self.pipeline
        if pipeline:  # parsed but never started: they end here
            for cycle in pipeline:
                self._emit_cycle(cycle)
            pipeline.clear()
        if self.timed and self.phase == HEAD and self.requests and not self.ignore_input:
            self._emit_refused(0, "client_disconnect")
        if self.flow is not None:
            self.flow.resume_writing()  # a send waiting in drain() must see the disconnect
        self._drop_parser()
        if self.tasks_running == 0:  # else ConnectionClosed waits for the last app task
            self._finish()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # httptools callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.phase = HEAD
        self.deadline_phase = NO_PHASE
        self.url = b""
        self.headers = []
        self.host_count = 0
        self.expect_100 = False
        self.transfer_encoding = None
        self.head_upper = self.chunk_len
        self.head_lower = 0
        self.requests += 1
        if self.timed:
            self.begin_ns = self.recv_ns

    def on_url(self, url: bytes) -> None:
        if self.url:
            url = self.url + url
        self.url = url
        if len(url) > self.state.config.limit_request_line:
            raise RejectRequest(414, "Request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.phase != HEAD:  # a trailer field, after a chunked body
            self.framing.trailer(name, value)
            return
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp drops leading OWS, not trailing (RFC 9112 5)
        if name in _WATCHED_HEADERS:
            if name == b"host":
                self.host_count += 1
                if value not in VALID_HOSTS:
                    check_host(value)
            elif name == b"expect":
                self.expect_100 = value.lower() == b"100-continue"
            elif self.transfer_encoding is None:
                self.transfer_encoding = value
            else:
                self.transfer_encoding += b"," + value
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.timed:
            self.headers_done_ns = monotonic_ns()
        state = self.state
        config = state.config
        parser = self.parser
        headers = self.headers
        limit_head = config.limit_request_head
        if self.head_upper > limit_head and head_size(self.url, headers) > limit_head:
            raise RejectRequest(431, "Request header fields too large")
        if len(headers) > config.limit_request_fields:
            raise RejectRequest(431, "Too many request header fields")
        version = parser.get_http_version()
        if version == "1.1":
            http11 = True
            if self.host_count != 1:
                raise RejectRequest(
                    400, "Missing Host header" if not self.host_count else "Duplicate Host header"
                )
        elif version == "1.0":
            http11 = False
            if self.host_count > 1:
                raise RejectRequest(400, "Duplicate Host header")
        else:
            raise RejectRequest(505, f"HTTP/{version} is not supported")
        method_bytes = parser.get_method()
        method = _METHOD_NAMES.get(method_bytes) or method_bytes.decode("ascii")
        if method == "CONNECT":
            raise RejectRequest(501, "CONNECT is not supported")
        last_message = False
        if self.transfer_encoding is not None:
            check_transfer_encoding(self.transfer_encoding)
            self.framing.begin()
            self.section_deadline = NO_DEADLINE
            # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; close after it.
            last_message = not http11
        target = self.url
        if target[:1] == b"/" and b"#" not in target:
            raw_path, _, query = target.partition(b"?")
        else:
            raw_path, query = split_target(target)
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        root_path = config.root_path
        if root_path:
            path = root_path + path
            raw_path = root_path.encode() + raw_path
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": _ASGI_VERSION, "spec_version": _SPEC_VERSION},
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": method,
            "root_path": root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": headers,
            "state": state.app_state.copy(),
        }
        limit = config.limit_concurrency
        if limit is not None and (len(state.connections) > limit or state.active_requests >= limit):
            logger.warning("Exceeded concurrency limit.")
            raise RejectRequest(503, "Service Unavailable", "overloaded")
        keep_alive = not last_message and parser.should_keep_alive() and not state.shutting_down
        cycle = RequestCycle(
            scope,
            target,
            keep_alive,
            http11,
            self.expect_100 and http11,  # RFC 9110 10.1.1: an HTTP/1.0 client never waits
            self.cycle_link,
            [self.begin_ns, self.headers_done_ns, 0, 0, 0, 0, 0] if self.timed else None,
            self.requests,
        )
        self.cycle = cycle
        self.phase = BODY
        if last_message:
            self.last_message = True
        if self.running is None:
            self._start(cycle)
        else:  # pipelined: wait for the response in flight, and stop reading meanwhile
            pipeline = self.pipeline
            if pipeline is None:
                pipeline = self.pipeline = deque()
            pipeline.append(cycle)
            self.flow.pause_reading()
            if len(pipeline) >= MAX_PIPELINED:
                cycle.keep_alive = False
                self.last_message = True

    def on_chunk_header(self) -> None:
        self.framing.chunk_header()

    def on_chunk_complete(self) -> None:
        self.framing.chunk_complete()

    def on_body(self, body: bytes) -> None:
        self.framing.section = NO_SECTION  # body data: the parser is out of the framing
        cycle = self.cycle
        assert cycle is not None
        if cycle.response_complete:
            return  # the app answered without reading it all; keep draining
        if cycle.add_body(body):
            self.flow.pause_reading()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        assert cycle is not None
        if self.timed:
            cycle.stamps[STAMP_BODY_DONE] = monotonic_ns()
        cycle.more_body = False
        if cycle.waiter is not None:  # (the usual GET: the app has not asked yet)
            cycle.wake()
        if cycle.response_complete and self.running is None and not self.pipeline:
            self._become_idle()  # the body of an already answered request is drained
        else:
            self.phase = BUSY
        if self.last_message:
            raise _StopParsing

    # Request lifecycle (called by RequestCycle) ---------------------------------------
    def _start(self, cycle: RequestCycle) -> None:
        self.running = cycle
        self.tasks_running += 1
        self.state.active_requests += 1
        cycle.task = self.loop.create_task(cycle.run_asgi(self.app))

    def response_complete(self, cycle: RequestCycle) -> None:
        """The last byte of `cycle`'s response is written: close, or go on to the next."""
        self.running = None
        if self.state.access_log:
            cycle.log_access()
        if not cycle.keep_alive or self.transport.is_closing():
            self.close("server_closed")
            return
        if cycle.more_body and cycle.expect_100:
            # The client still waits for "100 Continue" and will not send the body: the
            # stream position is unknown, so this connection cannot carry another request.
            self.close("server_closed")
            return
        pipeline = self.pipeline
        if pipeline:
            self._start(pipeline.popleft())
            if not pipeline:
                self._resume_reading()
            return
        if self.pending_reject is not None:
            self._write_reject(self.pending_reject)
            return
        if self.flow.read_paused:
            self._resume_reading()
        if self.phase == BUSY:
            self._become_idle()

    def cycle_finished(self, cycle: RequestCycle) -> None:
        """The app task of `cycle` returned; its record can be emitted."""
        self.tasks_running -= 1
        self.state.active_requests -= 1
        self.state.total_requests += 1
        if self.timed:  # _emit_cycle, inlined on the per-request path
            emit = self.state.emit_hook
            assert emit is not None
            cycle.timed = False  # its record holds its stamps and chunks: they are final
            emit(
                timing.request_timing(
                    self.hook_ids,
                    cycle.seq,
                    cycle.scope,
                    cycle.target,
                    cycle.status,
                    cycle.stamps,
                    cycle.chunks,
                    cycle.request_body_bytes,
                    cycle.response_bytes,
                    cycle.keep_alive,
                    cycle.outcome,
                    self.state.capture_headers,
                )
            )
        if self.lost and self.tasks_running == 0:
            self._finish()

    def body_wanted(self, cycle: RequestCycle) -> None:
        """The app waits for more body: make sure the socket is being read, and timed."""
        if cycle is self.cycle and not self.pipeline:
            if self.flow.read_paused:
                self._resume_reading()
            elif self.phase == BODY and self.deadline_phase != BODY:
                self._time_body(0, True)  # e.g. "100 Continue" just went out

    def body_consumed(self, cycle: RequestCycle) -> None:
        """The app took the buffered body: reading may go on (the next receive asks anyway)."""
        if cycle is self.cycle and not self.pipeline:
            self._resume_reading()

    def _resume_reading(self) -> None:
        """Read again; mid-body, the client's clock restarts (the wait was the server's)."""
        if self.flow.read_paused:
            self.flow.resume_reading()
            if self.phase == BODY:
                self._time_body(0, True)

    # Closing, rejecting, shutting down ------------------------------------------------
    def close(self, reason: str) -> None:
        self.ignore_input = True  # whatever else arrives is not answered
        if not self.close_reason:
            self.close_reason = reason
        if not self.transport.is_closing():
            self.transport.close()

    def reject(self, reject: RejectRequest) -> None:
        """Answer bad input ourselves, in order: after the response in flight, if any."""
        # Control flow, not an error to show: it is kept without the frames it was raised
        # through (they hold this connection), so keeping it makes no reference cycle.
        reject.__traceback__ = reject.__context__ = None
        self.ignore_input = True
        logger.info("%d %s (client %s)", reject.status, reject.detail, self.client)
        cycle = self.cycle
        if self.phase == BODY and cycle is not None:
            self._reject_body(cycle, reject)
        elif self.running is not None:  # requests parsed before the bad one get answers
            self.pending_reject = reject
            self.flow.pause_reading()
        else:
            self._write_reject(reject)

    def _reject_body(self, cycle: RequestCycle, reject: RejectRequest) -> None:
        """The body of a request that has a cycle broke (bad chunking) or stalled."""
        if cycle is self.running:
            if cycle.abandon(reject.status, reject.detail, reject.outcome):
                self.running = None
                self._linger_close(reject.reason)
            else:  # the app's response already went out in part: all we can do is stop
                self.close(reject.reason)
        elif cycle.response_complete:  # draining the body of an answered request
            if cycle.outcome == "ok":
                cycle.outcome = reject.outcome
            self.close(reject.reason)
        else:  # queued behind the response in flight: it never runs
            assert self.pipeline is not None
            self.pipeline.remove(cycle)
            cycle.abandon(0, "", reject.outcome)
            cycle.status = reject.status
            self._emit_cycle(cycle)
            reject.recorded = True
            self.pending_reject = reject
            self.flow.pause_reading()

    def _write_reject(self, reject: RejectRequest) -> None:
        self.pending_reject = None
        data = error_response(reject.status, self.state.default_head, reject.detail)
        if self.timed and not reject.recorded:
            self._emit_refused(reject.status, reject.outcome, len(data))
        if not self.transport.is_closing():
            self.transport.write(data)
        self._linger_close(reject.reason)

    def _linger_close(self, reason: str) -> None:
        """Close after an error response without letting a RST destroy it.

        Closing with unread input in the socket makes the kernel send a RST, which can
        discard the response before the client reads it. So: send FIN after the response,
        then read and discard until the client closes, for at most LINGER_SECONDS.
        """
        if not self.close_reason:
            self.close_reason = reason
        self.ignore_input = True
        self._drop_parser()  # nothing more is parsed; it may hold a large partial head
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            self.flow.resume_reading()
            self.linger = self.loop.call_later(LINGER_SECONDS, self._linger_over)
        else:
            transport.close()

    def _linger_over(self) -> None:
        self.linger = None
        if not self.transport.is_closing():
            self.transport.close()

    def shutdown(self) -> None:
        """Graceful shutdown: close when idle, else after the response in flight."""
        if self.running is None and self.phase != BODY:
            self.close("shutdown")
            return
        for cycle in self._cycles():
            cycle.keep_alive = False

    def abort(self) -> None:
        """Forced shutdown: cancel the app tasks and drop the connection."""
        for cycle in self._cycles():
            task = cycle.task
            if task is not None and not task.done():
                task.cancel()
        if not self.close_reason:
            self.close_reason = "shutdown"
        self.transport.abort()

    def _upgrade_ignored(self) -> None:
        # llhttp stops at an Upgrade (websocket, h2c) request; we answer it as plain HTTP
        # and close afterwards, since what the client sends next is not HTTP/1.1.
        logger.debug("Upgrade requested; not supported, answering as plain HTTP.")
        self.ignore_input = True
        self.flow.pause_reading()
        cycle = self.cycle
        if cycle is not None:
            cycle.keep_alive = False

    # Timers ---------------------------------------------------------------------------
    def _become_idle(self) -> None:
        self.phase = IDLE
        if self.state.shutting_down:
            self.close("shutdown")
            return
        self._arm(IDLE, self.loop.time() + self.state.config.timeout_keep_alive)

    def _arm(self, phase: int, deadline: float) -> None:
        self.deadline_phase = phase
        self.deadline = deadline
        timer = self.timer
        if timer is None or self.timer_when > deadline:
            if timer is not None:
                timer.cancel()
            self.timer_when = deadline
            self.timer = self.loop.call_at(deadline, self._on_timer)

    def _time_body(self, received: int, restart: bool) -> None:
        """Arm the BODY deadline after `received` more bytes (the module docstring's rules).

        `restart`: the clock starts afresh (first read of a body, or reading resumed).
        """
        cycle = self.cycle
        if cycle is not None and cycle.expect_100:
            return  # the client waits for our "100 Continue": not its turn yet
        config = self.state.config
        now = self.loop.time()
        if restart:
            self.rate_start = now
            self.rate_bytes = received
            self.section_deadline = NO_DEADLINE
        else:
            self.rate_bytes += received
        deadline = now + config.timeout_request_body
        rate = config.min_request_body_rate
        if rate:
            by_rate = self.rate_start + config.min_request_body_rate_grace + self.rate_bytes / rate
            if by_rate < deadline:
                deadline = by_rate
        if self.section_deadline < deadline:
            deadline = self.section_deadline
        self._arm(BODY, deadline)

    def _on_timer(self) -> None:
        self.timer = None
        phase = self.phase
        if (
            phase != self.deadline_phase
            or phase == BUSY
            or self.ignore_input  # nothing more is read: no more answers for slowness
            or self.transport.is_closing()
        ):
            return  # the deadline belonged to a phase that is over
        if phase == BODY and self.flow.read_paused:
            self.deadline_phase = NO_PHASE  # we hold the client back; resuming restarts it
            return
        if self.loop.time() < self.deadline:
            self.timer_when = self.deadline
            self.timer = self.loop.call_at(self.deadline, self._on_timer)
            return
        if phase == IDLE:
            self.close("keep_alive_timeout")
        elif phase == HEAD:
            self.reject(RejectRequest(408, "Request header timeout", "timeout", "header_timeout"))
        else:
            self.reject(RejectRequest(408, "Request body timeout", "timeout", "body_timeout"))

    # Hooks ----------------------------------------------------------------------------
    def _cycles(self) -> list[RequestCycle]:
        """The cycles this connection still owes something: in flight, queued, being read."""
        cycles = [] if self.running is None else [self.running]
        if self.pipeline:
            cycles.extend(self.pipeline)
        cycle = self.cycle
        if cycle is not None and cycle not in cycles:
            cycles.append(cycle)
        return cycles

    def _emit_cycle(self, cycle: RequestCycle) -> None:
        emit = self.state.emit_hook
        if emit is not None:
            cycle.timed = False  # its record holds its stamps and chunks: they are final
            emit(
                timing.request_timing(
                    self.hook_ids,
                    cycle.seq,
                    cycle.scope,
                    cycle.target,
                    cycle.status,
                    cycle.stamps,
                    cycle.chunks,
                    cycle.request_body_bytes,
                    cycle.response_bytes,
                    cycle.keep_alive,
                    cycle.outcome,
                    self.state.capture_headers,
                )
            )

    def _emit_refused(self, status: int, outcome: str, response_bytes: int = 0) -> None:
        """Record a request the server answered (or dropped) itself before any app saw it.

        Method and version are only known once the request line was parsed, which a
        non-empty target proves.
        """
        emit = self.state.emit_hook
        if emit is None:
            return
        target = self.url
        parser = self.parser
        method = version = ""
        if target and parser is not None:
            method = parser.get_method().decode("ascii", "replace")
            version = parser.get_http_version()
        headers = self.headers if self.state.capture_headers else None
        emit(
            timing.request_refused(
                self.hook_ids,
                self.requests,
                method,
                target,
                version,
                self.begin_ns,
                self.headers_done_ns,
                headers,
                status,
                outcome,
                response_bytes,
            )
        )

    def _finish(self) -> None:
        """Last act of a connection: forget it, and say so in the hook stream."""
        self.state.connections.discard(self)
        emit = self.state.emit_hook
        if emit is not None:
            emit(
                timing.connection_closed(
                    self.hook_ids, self.requests, self.close_reason, self.lost_ns
                )
            )
        self.cycle = None
        self.running = None
        self.pipeline = None
        self.pending_reject = None
        # Its callbacks are bound to this object, as the parser's are (_drop_parser): a
        # loop that would outlive the connection until a full garbage collection.
        self.cycle_link = None  # type: ignore[assignment]

    def _drop_parser(self) -> None:
        """Nothing more is parsed here: let go of the parser, which holds this object's
        methods and maybe a large partial field, and of the last head's header list."""
        self.parser = None  # type: ignore[assignment]
        self.headers = []
