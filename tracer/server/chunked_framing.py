"""Bounds on the parts of a chunked request body that the parser reads without calling back.

llhttp reports chunk data (`on_body`) and the ends of chunk-size lines and of chunks
(`on_chunk_header`, `on_chunk_complete`), but it reads a chunk-size line with its extensions,
and the trailer section after the last chunk, silently until they end - and httptools holds
a trailer field's name and value in memory meanwhile. Unbounded, a client could stream one
chunk extension or one trailer field for ever, or make the server hold megabytes. So these
sections are bounded like an open head (protocol.py, `_feed_open_head`): bytes of whole reads
that go into one section count (`lower`); a read that could take it over --limit-request-head
is fed only up to the limit first, and a section still open then is too large: 431 for a
trailer section, 400 for a chunk-size line. The protocol also gives a section that outlasts a
whole read --timeout-request-header to end (`feed` returns True then).

Trailer fields are counted against the head's limits (--limit-request-fields,
--limit-request-head) and dropped: ASGI has no request trailers, and adding them to
scope["headers"] - the list the app already holds - would slip fields past the checks that
ran on the head (a second Host, an X-User that the app trusts).

Where the parser may be between reads (`section`):

    NO_SECTION       not in a chunked body, or inside chunk data (on_body came)
    SIZE_LINE        after the head or a chunk: a chunk-size line (and extensions) comes
    AFTER_SIZE_LINE  after a chunk-size line: chunk data, or for the last chunk, trailers

A section still open after a read is the same section when neither a chunk callback came
(`marks`) nor body data (`section` reset by the protocol's on_body). A chunked message ends
with on_chunk_complete, so `section` stays SIZE_LINE after it: the protocol consults it only
while reading a chunked body (`begin` starts each one afresh).
"""

from __future__ import annotations

import httptools

from tracer.server.request_head import RejectRequest

NO_SECTION, SIZE_LINE, AFTER_SIZE_LINE = 0, 1, 2


class ChunkedFraming:
    """The framing state of one connection's chunked request bodies (one at a time)."""

    __slots__ = (
        "limit_bytes",
        "limit_fields",
        "lower",
        "marks",
        "section",
        "trailer_bytes",
        "trailers",
    )

    def __init__(self, limit_bytes: int, limit_fields: int) -> None:
        self.limit_bytes = limit_bytes  # --limit-request-head
        self.limit_fields = limit_fields  # --limit-request-fields
        self.section = NO_SECTION
        self.lower = 0  # bytes of whole reads taken by the open section
        self.marks = 0  # sections begun so far: a change means a new one
        self.trailers = 0  # trailer fields of the current body
        self.trailer_bytes = 0

    def begin(self) -> None:
        """The head of a chunked request is done: a chunk-size line comes first."""
        self.section = SIZE_LINE
        self.lower = self.trailers = self.trailer_bytes = 0
        self.marks += 1

    def chunk_header(self) -> None:
        """A chunk-size line ended: chunk data follows, or (size 0) the trailer section."""
        self.section = AFTER_SIZE_LINE
        self.lower = 0
        self.marks += 1

    def chunk_complete(self) -> None:
        """A chunk (or the trailer section) ended: a chunk-size line may follow."""
        self.section = SIZE_LINE
        self.lower = 0
        self.marks += 1

    def trailer(self, name: bytes, value: bytes) -> None:
        """A trailer field: counted against the head's limits, then dropped."""
        self.trailers += 1
        self.trailer_bytes += len(name) + len(value) + 4
        if self.trailers > self.limit_fields:
            raise RejectRequest(431, "Too many request trailer fields")
        if self.trailer_bytes > self.limit_bytes:
            raise RejectRequest(431, "Request trailer fields too large")

    def feed(self, parser: httptools.HttpRequestParser, data: bytes) -> bool:
        """Feed a read that began inside a section; True if all of it went into that section.

        Raises RejectRequest when the section would pass --limit-request-head.
        """
        section = self.section
        marks = self.marks
        room = self.limit_bytes - self.lower
        if len(data) > room:
            parser.feed_data(data[:room])
            if self.section == section and self.marks == marks:
                if section == AFTER_SIZE_LINE:  # no chunk data came: trailers
                    raise RejectRequest(431, "Request trailer fields too large")
                raise RejectRequest(400, "Chunk size line too long")
            parser.feed_data(data[room:])
            return False
        parser.feed_data(data)
        if self.section == section and self.marks == marks:
            self.lower += len(data)
            return True
        return False
