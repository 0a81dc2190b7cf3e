"""Timing hooks: one record per connection event and request, complete and on one clock."""

from __future__ import annotations

import fcntl
import logging
import marshal
import os
import select
import time
from typing import Any

import pytest

from tests.server_fixtures import (
    RunningServer,
    build_request,
    running_server,
    spawned_server,
    wait_for,
)
from tracer.records.hooks import (
    ConnectionClosed,
    ConnectionOpened,
    HookRecord,
    RequestTiming,
    ServerStarted,
)
from tracer.server.hook_channel import (
    FRAME_LENGTH,
    HookChannelError,
    HookChannelReader,
    HookChannelWriter,
)
from tracer.server.hooks import (
    STAMP_FIELDS,
    HookWireError,
    record_from_wire,
    wire_from_record,
)

F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032


def records_until_closed(server: RunningServer, count: int = 1) -> list[HookRecord]:
    assert wait_for(
        lambda: sum(isinstance(r, ConnectionClosed) for r in server.records) >= count
    ), server.records
    return list(server.records)


def of_type(records: list[HookRecord], kind: type[Any]) -> list[Any]:
    return [record for record in records if isinstance(record, kind)]


def test_keep_alive_connection_records() -> None:
    before = time.monotonic_ns()
    with running_server(hooks=True) as server:
        with server.connect() as connection:
            client = connection.sock.getsockname()
            first = connection.request(target="/?a=1")
            connection.send(build_request("POST", "/echo", body=b"0123456789"))
            second_raw = connection.sock.recv(65536)
            while second_raw.count(b"body_messages") == 0:
                second_raw += connection.sock.recv(65536)
        records = records_until_closed(server)
    after = time.monotonic_ns()

    started, opened, timing1, timing2, closed = records
    assert isinstance(started, ServerStarted) and started.ts_ns <= opened.ts_ns
    assert isinstance(opened, ConnectionOpened)
    assert opened.pid == os.getpid() == timing1.pid == closed.pid
    assert opened.tid == server.info.tid != 0
    assert opened.fd > 2
    assert opened.conn_id == timing1.conn_id == timing2.conn_id == closed.conn_id
    assert opened.peer == (client[0], client[1])
    assert opened.local == ("127.0.0.1", server.port)
    assert before < opened.ts_ns < after

    assert isinstance(timing1, RequestTiming) and isinstance(timing2, RequestTiming)
    assert (timing1.seq, timing2.seq) == (1, 2)
    assert (timing1.method, timing1.path, timing1.query) == ("GET", "/", "a=1")
    assert (timing2.method, timing2.path, timing2.query) == ("POST", "/echo", "")
    assert timing1.http_version == "1.1"
    assert timing1.status == first.status == 200
    assert timing1.fd == opened.fd
    assert timing1.keep_alive and timing2.keep_alive
    assert timing1.outcome == timing2.outcome == "ok"
    assert timing1.headers == ()
    assert timing2.request_body_bytes == 10
    assert timing1.request_body_bytes == 0
    assert timing2.response_bytes == len(second_raw)
    for t in (timing1, timing2):
        assert (
            opened.ts_ns
            <= t.first_byte_ns
            <= t.headers_done_ns
            <= t.body_done_ns
            <= t.app_called_ns
            <= t.response_start_ns
            <= t.chunks[0][0]
            <= t.response_done_ns
            <= t.app_returned_ns
            < after
        )
        assert sum(size for _, size in t.chunks) == t.response_bytes
        assert len(t.chunks) == 1  # head and small body go out in one write
    assert timing1.response_done_ns <= timing2.first_byte_ns

    assert isinstance(closed, ConnectionClosed)
    assert closed.requests == 2
    assert closed.reason == "client_closed"
    assert timing2.app_returned_ns <= closed.ts_ns < after


def test_streaming_response_records_each_write() -> None:
    with running_server(hooks=True) as server:
        with server.connect() as connection:
            connection.send(build_request(target="/stream?parts=4"))
            raw = b""
            while not raw.endswith(b"0\r\n\r\n"):
                raw += connection.sock.recv(65536)
        records = records_until_closed(server)
    (timing,) = of_type(records, RequestTiming)
    assert len(timing.chunks) == 5  # head+part0, part1..3, terminating chunk
    assert sum(size for _, size in timing.chunks) == len(raw) == timing.response_bytes
    stamps = [ts for ts, _ in timing.chunks]
    assert stamps == sorted(stamps)


def test_pipelined_requests_share_first_byte_and_keep_order() -> None:
    with running_server(hooks=True) as server:
        with server.connect() as connection:
            connection.send(build_request(target="/slow?s=0.05") + build_request(target="/"))
            connection.read_response()
            connection.read_response()
        records = records_until_closed(server)
    first, second = of_type(records, RequestTiming)
    assert (first.seq, second.seq) == (1, 2)
    assert first.first_byte_ns == second.first_byte_ns  # one recv carried both
    assert second.app_called_ns >= first.response_done_ns  # answered in order


def test_captured_headers() -> None:
    with running_server(hooks=True, hook_capture_headers=True) as server:
        with server.connect() as connection:
            connection.request(headers=[("X-One", "1"), ("Cookie", "c=2")])
        records = records_until_closed(server)
    (timing,) = of_type(records, RequestTiming)
    assert timing.headers == (("host", "test"), ("x-one", "1"), ("cookie", "c=2"))


@pytest.mark.parametrize(
    ("raw", "status", "outcome", "reason"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400, "bad_request", "bad_request"),
        (b"BAD\x00\r\n\r\n", 400, "bad_request", "bad_request"),
        (build_request(target="/raise-before"), 500, "app_error", "server_closed"),
    ],
)
def test_failed_requests_are_recorded(raw: bytes, status: int, outcome: str, reason: str) -> None:
    with running_server(hooks=True) as server:
        with server.connect() as connection:
            connection.send(raw)
            assert connection.read_response().status == status
            assert connection.is_closed()
        records = records_until_closed(server)
    (timing,) = of_type(records, RequestTiming)
    assert (timing.status, timing.outcome, timing.keep_alive) == (status, outcome, False)
    assert timing.response_bytes > 0
    assert timing.first_byte_ns > 0
    (closed,) = of_type(records, ConnectionClosed)
    assert closed.reason == reason
    assert records[-1] is closed


def test_client_gone_while_app_runs_closed_record_comes_last() -> None:
    with running_server(hooks=True) as server:
        with server.connect() as connection:
            connection.send(build_request(target="/slow?s=0.3"))
            time.sleep(0.1)
        records = records_until_closed(server)
    kinds = [type(record).__name__ for record in records]
    assert kinds == ["ServerStarted", "ConnectionOpened", "RequestTiming", "ConnectionClosed"]
    timing = records[2]
    assert isinstance(timing, RequestTiming)
    assert timing.outcome == "client_disconnect"
    assert timing.status == 0  # the response was never started...
    assert timing.response_start_ns == 0 and timing.chunks == ()  # ...so these did not happen
    assert timing.app_returned_ns > 0


def test_timeouts_are_recorded() -> None:
    with running_server(hooks=True, timeout_keep_alive=0.2, timeout_request_header=0.3) as server:
        with server.connect() as connection:
            assert connection.is_closed()
        with server.connect() as connection:
            connection.send(b"GET / HTTP/1.1\r\n")
            assert connection.read_response().status == 408
        records = records_until_closed(server, count=2)
    closes = of_type(records, ConnectionClosed)
    assert [c.reason for c in closes] == ["keep_alive_timeout", "header_timeout"]
    (timing,) = of_type(records, RequestTiming)
    assert (timing.status, timing.outcome) == (408, "timeout")


def test_hooks_off_means_no_emitter_at_all() -> None:
    with running_server() as server:
        assert server.server.state is not None
        assert server.server.state.emit_hook is None
        with server.connect() as connection:
            assert connection.request().status == 200


def test_plain_emit_sink_gets_dataclasses() -> None:
    """A sink with only `emit(record)` (the HookSink protocol) works too."""

    class PlainSink:
        def __init__(self) -> None:
            self.records: list[HookRecord] = []

        def emit(self, record: HookRecord) -> None:
            self.records.append(record)

    sink = PlainSink()
    with running_server(sink=sink) as server, server.connect() as connection:
        connection.request()
    assert wait_for(lambda: any(isinstance(r, ConnectionClosed) for r in sink.records))
    assert [type(r).__name__ for r in sink.records] == [
        "ServerStarted",
        "ConnectionOpened",
        "RequestTiming",
        "ConnectionClosed",
    ]


# Wire format and channel --------------------------------------------------------------
def sample_records() -> list[HookRecord]:
    return [
        ConnectionOpened(1, 2, 7, 1, ("127.0.0.1", 5555), ("127.0.0.1", 8000), 10),
        RequestTiming(
            1,
            2,
            7,
            1,
            1,
            "GET",
            "/a%20b",
            "q=1",
            "1.1",
            200,
            11,
            12,
            13,
            14,
            15,
            17,
            16,
            ((16, 120),),
            0,
            120,
            True,
            "ok",
            (("host", "x"),),
        ),
        ConnectionClosed(1, 2, 7, 1, 1, "client_closed", 20),
    ]


def test_wire_forms_are_the_documented_ones_and_round_trip() -> None:
    opened, request, closed = sample_records()
    assert wire_from_record(opened) == ("open", *opened)
    assert wire_from_record(closed) == ("close", *closed)
    assert wire_from_record(request) == (
        "request",
        (1, 2, 7, 1),  # pid, tid, fd, conn_id
        1,
        "GET",
        b"/a%20b?q=1",  # the target as received: path and query
        "1.1",
        200,
        [11, 12, 13, 14, 15, 17, 16],  # first byte ... response done
        [(16, 120)],
        0,
        120,
        True,
        "ok",
        ((b"host", b"x"),),  # as parsed: decoded by the reader, not on the event loop
    )
    for record in sample_records():
        rebuilt = record_from_wire(wire_from_record(record))
        assert rebuilt == record and type(rebuilt) is type(record)
    # A target without a query, and one ending in "?": the path keeps no "?" either way.
    bare = request._replace(query="")
    assert record_from_wire(wire_from_record(bare)) == bare
    wire = wire_from_record(request)
    assert record_from_wire((*wire[:4], b"/a?", *wire[5:])) == bare._replace(path="/a")


def test_bad_wire_tuples_are_rejected() -> None:
    with pytest.raises(HookWireError):
        record_from_wire(("nope", 1))
    with pytest.raises(HookWireError):
        record_from_wire(("close", 1, 2))
    with pytest.raises(HookWireError):
        record_from_wire([])  # type: ignore[arg-type]
    wire = wire_from_record(sample_records()[1])
    for bad in (
        wire[:-1],  # an item short
        (wire[0], (1, 2, 7), *wire[2:]),  # ids without conn_id
        (*wire[:4], "/a", *wire[5:]),  # target not bytes
        (*wire[:7], [11, 12, 13], *wire[8:]),  # stamps missing
        (*wire[:8], 5, *wire[9:]),  # chunks not a list
        (*wire[:-1], 5),  # headers not a list
        (*wire[:-1], ((b"host",),)),  # a header without its value
    ):
        with pytest.raises(HookWireError):
            record_from_wire(bad)


def test_channel_round_trip_through_a_pipe_with_partial_frames() -> None:
    read_fd, write_fd = os.pipe()
    writer = HookChannelWriter(write_fd)
    reader = HookChannelReader(read_fd)
    try:
        for record in sample_records() * 3:
            writer.emit(record)
        writer.flush()  # no loop running here: emit already wrote, flush is a no-op
        data = os.read(read_fd, 1 << 16)
        records: list[HookRecord] = []
        for i in range(len(data)):  # one byte at a time: every split point of every frame
            records.extend(reader.feed(data[i : i + 1]))
        assert records == sample_records() * 3
        assert reader.pending_bytes == 0
        assert reader.dropped == 0
    finally:
        writer.close()
        reader.close()


def test_writer_asks_for_a_big_pipe() -> None:
    read_fd, write_fd = os.pipe()
    writer = HookChannelWriter(write_fd)
    assert fcntl.fcntl(write_fd, F_GETPIPE_SZ) >= 1 << 20
    writer.close()
    os.close(read_fd)


def test_channel_frames_are_length_prefixed_marshalled_batches() -> None:
    read_fd, write_fd = os.pipe()
    writer = HookChannelWriter(write_fd, batch_records=3)
    records = sample_records()
    for record in records:
        writer.emit(record)  # no loop running: each emit writes at once
    writer.close()
    data = os.read(read_fd, 1 << 16)
    os.close(read_fd)
    (length,) = FRAME_LENGTH.unpack_from(data)
    assert marshal.loads(data[4 : 4 + length]) == [wire_from_record(records[0])]


async def test_a_request_record_takes_under_190_bytes_on_the_wire() -> None:
    """Marshal format 4: ASCII strings and small tuples in their short forms, repeated
    objects as back-references (format 2 spends ~219 bytes on the same record, format 4
    ~177; the 1 MiB pipe holds that many more)."""
    read_fd, write_fd = os.pipe()
    writer = HookChannelWriter(write_fd, batch_records=1000, flush_interval=60)
    base = sample_records()[1]._replace(method="POST", path="/api/items", headers=())
    stamp = 20_338_828_170_862  # CLOCK_MONOTONIC ns after hours of uptime: 45-bit ints
    records = [
        base._replace(
            seq=i,
            chunks=((stamp + i * 1000 + 9, 133),),
            **{name: stamp + i * 1000 + n for n, name in enumerate(STAMP_FIELDS)},
        )
        for i in range(256)
    ]
    ids = (base.pid, base.tid, base.fd, base.conn_id)  # one tuple per connection, as served
    for record in records:
        wire = wire_from_record(record)
        writer.emit_wire((wire[0], ids, *wire[2:]))
    writer.close()  # one frame: the batch
    reader = HookChannelReader(read_fd)
    data = os.read(read_fd, 1 << 20)
    assert reader.feed(data) == records
    reader.close()
    assert len(data) / len(records) < 190


async def test_a_batch_is_one_frame_and_an_oversized_batch_is_split() -> None:
    read_fd, write_fd = os.pipe()
    writer = HookChannelWriter(write_fd, batch_records=1000, flush_interval=60)
    reader = HookChannelReader(read_fd)
    # Six different 300 kB headers (equal objects would be back-references in the frame).
    bigs = [sample_records()[1]._replace(headers=(("x-big", str(i) * 300_000),)) for i in range(6)]
    try:
        for record in bigs:  # ~1.8 MB: over the 1 MiB frame limit as one batch
            writer.emit(record)
        writer.flush()
        data = b""
        while True:  # more than the pipe holds: read, let the writer go on, until done
            data += os.read(read_fd, 1 << 22)
            if not writer._backlog:
                break
            writer.flush()
        frames = []
        offset = 0
        while offset < len(data):
            (length,) = FRAME_LENGTH.unpack_from(data, offset)
            frames.append(marshal.loads(data[offset + 4 : offset + 4 + length]))
            offset += 4 + length
        assert [len(batch) for batch in frames] == [3, 3]
        assert reader.feed(data) == bigs
        assert writer.dropped == 0
    finally:
        writer.close()
        reader.close()


def test_full_pipe_drops_are_counted_and_reported() -> None:
    read_fd, write_fd = os.pipe()
    writer = HookChannelWriter(write_fd, max_backlog_bytes=8192)
    fcntl.fcntl(write_fd, F_SETPIPE_SZ, 4096)  # after the writer asked for a big one
    reader = HookChannelReader(read_fd)
    record = sample_records()[1]
    for _ in range(500):  # far more than 4 KiB of pipe + 8 KiB of backlog
        writer.emit(record)
    assert writer.dropped > 0
    received: list[HookRecord] = []
    for _ in range(200):  # the reader catches up; the writer delivers backlog + drop count
        received.extend(reader.read())
        writer.flush()
        if reader.dropped == writer.dropped and not writer._backlog:
            break
    received.extend(reader.read())
    assert reader.dropped == writer.dropped > 0
    assert len(received) + writer.dropped == 500
    assert all(r == record for r in received)
    writer.close()
    reader.close()


def test_reader_gone_is_logged_not_silent(caplog: pytest.LogCaptureFixture) -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    writer = HookChannelWriter(write_fd)
    with caplog.at_level(logging.WARNING, logger="reqtrace.server"):
        writer.emit(sample_records()[0])
        writer.emit(sample_records()[0])
        writer.close()
    assert writer.dropped == 2
    assert "hook channel closed by the reader" in caplog.text
    assert "2 timing records were not delivered" in caplog.text


def test_corrupt_stream_is_an_error() -> None:
    read_fd, write_fd = os.pipe()
    reader = HookChannelReader(read_fd)
    with pytest.raises(HookChannelError):
        reader.feed(FRAME_LENGTH.pack(3) + b"\xff\xff\xff")
    with pytest.raises(HookChannelError):
        HookChannelReader(write_fd, close_fd=False).feed(FRAME_LENGTH.pack(1 << 30))
    reader.close()
    os.close(write_fd)


def test_in_process_server_through_the_channel() -> None:
    read_fd, write_fd = os.pipe()
    reader = HookChannelReader(read_fd)
    with running_server(sink=HookChannelWriter(write_fd)) as server, server.connect() as client:
        client.request()
        client.request()
    records: list[HookRecord] = []
    while not reader.eof:  # the server closed the writer at shutdown: read to EOF
        select.select([reader], [], [], 5)
        records.extend(reader.read())
    assert [type(r).__name__ for r in records] == [
        "ServerStarted",
        "ConnectionOpened",
        "RequestTiming",
        "RequestTiming",
        "ConnectionClosed",
    ]
    reader.close()


def test_serve_hook_fd_sends_records_from_the_child_process() -> None:
    read_fd, write_fd = os.pipe()
    reader = HookChannelReader(read_fd)
    records: list[HookRecord] = []
    try:
        with spawned_server("--hook-fd", str(write_fd), pass_fds=(write_fd,)) as server:
            os.close(write_fd)
            with server.connect() as connection:
                connection.request(target="/echo?from=child")
            assert server.stop() == 0
            pid = server.process.pid
        deadline = time.monotonic() + 10
        while not reader.eof and time.monotonic() < deadline:
            select.select([reader], [], [], 1)
            records.extend(reader.read())
    finally:
        reader.close()
    started, opened, timing, closed = records
    assert isinstance(started, ServerStarted) and started.pid == pid
    assert isinstance(opened, ConnectionOpened) and opened.pid == pid
    assert isinstance(timing, RequestTiming)
    assert (timing.path, timing.query, timing.status) == ("/echo", "from=child", 200)
    assert isinstance(closed, ConnectionClosed)
    assert reader.dropped == 0
