"""Attach mode's correlator: requests delimited from kernel records alone (no hooks).

Synthetic records (tracer/correlate/synthetic_attach.py) stand for what the probes see
with RT_CFG_CAPTURE_HEAD: keep-alive, pipelined and partial requests, large responses,
blocking servers, closes and lost responses.
"""

from __future__ import annotations

import pytest

from tracer.correlate.kernel_only import (
    ATTACH_NOTE,
    BLOCKING_NOTE,
    NO_RESPONSE_NOTE,
    KernelOnlyCorrelator,
)
from tracer.correlate.request_line import parse_request_head, parse_status
from tracer.correlate.synthetic import (
    MS,
    US,
    Scenario,
    arrival_order,
    assert_matches,
    is_hook,
    run,
    stage_map,
)
from tracer.correlate.synthetic_attach import EAGAIN, attach_request
from tracer.model.trace import RequestTrace
from tracer.records import kernel as records


def attach_run(items: list) -> list[RequestTrace]:
    return run(items, KernelOnlyCorrelator())  # type: ignore[arg-type]


def kernel_only(scenario: Scenario) -> list:
    """The scenario's kernel records in time order (a close also leaves a hook record)."""
    return [record for record in scenario.time_ordered() if not is_hook(record)]


def new_connection(scenario: Scenario, at: int, port: int = 50_000, fd: int = 7):
    return scenario.connect(at, port, fd=fd, with_open=False)


def assert_tiles(trace: RequestTrace) -> None:
    cursor = trace.start_ns
    for stage in trace.stages:
        assert stage.start_ns == cursor, (stage, trace.stages)
        cursor = stage.end_ns
    assert cursor == trace.end_ns


# -- keep-alive: one request per read-then-answer turn --------------------------------------


def test_keep_alive_requests_are_delimited_by_the_conversation() -> None:
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    paths = ["/one", "/two?x=1", "/three"]
    expected = [
        attach_request(
            connection,
            (1_001 + 10 * i) * MS,
            request=f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
            server_time=(100 + 50 * i) * US,
        )
        for i, path in enumerate(paths)
    ]
    traces = attach_run(kernel_only(scenario))
    assert [(t.method, t.path, t.query, t.status, t.seq) for t in traces] == [
        ("GET", "/one", "", 200, 1),
        ("GET", "/two", "x=1", 200, 2),
        ("GET", "/three", "", 200, 3),
    ]
    for trace, want in zip(traces, expected, strict=True):
        assert_matches(trace, want)
        assert trace.complete and trace.http_version == "1.1" and trace.outcome == "ok"
        assert ATTACH_NOTE in trace.notes
        assert_tiles(trace)
    assert [t.stage("server").duration_ns for t in traces] == [100 * US, 150 * US, 200 * US]
    assert len({t.conn_id for t in traces}) == 1
    assert traces[0].connection.handshake_us == 40.0 and traces[0].connection.accept_queue_us


def test_a_request_is_emitted_when_the_next_begins_or_after_the_settle_time() -> None:
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    attach_request(connection, 1_001 * MS)
    attach_request(connection, 1_002 * MS)
    correlator = KernelOnlyCorrelator(reorder_window_ns=1 * MS)
    out = [t for record in kernel_only(scenario) for t in correlator.feed(record)]
    out += correlator.advance(1_004 * MS)  # every record is out of the reorder window
    assert [t.seq for t in out] == [1]  # the second request's read ended the first
    assert correlator.advance(1_002 * MS + 100 * MS) == []  # still within the settle time
    assert [t.seq for t in correlator.advance(1_002 * MS + 300 * MS)] == [2]
    assert correlator.flush() == []


def test_arrival_order_gives_the_same_traces_as_time_order() -> None:
    scenario = Scenario()
    for number in range(4):
        connection = new_connection(scenario, (1_000 + number) * MS, 50_000 + number, 7 + number)
        for i in range(5):
            attach_request(connection, (1_010 + 7 * i + number) * MS)
    ordered = attach_run(kernel_only(scenario))
    shuffled = attach_run(arrival_order(kernel_only(scenario)))
    key = lambda t: (t.conn_id, t.seq)  # noqa: E731
    assert [t.to_json() | {"id": 0} for t in sorted(ordered, key=key)] == [
        t.to_json() | {"id": 0} for t in sorted(shuffled, key=key)
    ]
    assert len(ordered) == 20


# -- partial reads, pipelining, large responses ---------------------------------------------------


def test_a_request_in_several_reads_is_one_request_and_the_server_starts_at_the_last() -> None:
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    body = b"x" * 3000
    request = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 3000\r\n\r\n" + body
    want = attach_request(connection, 1_001 * MS, request=request, reads=3)
    [trace] = attach_run(kernel_only(scenario))
    assert (trace.method, trace.path) == ("POST", "/upload")
    assert_matches(trace, want)
    assert trace.details["recv_calls"] == 3 and trace.details["recv_bytes"] == len(request)
    gap = [n for n in trace.notes if n.startswith("unobserved: recv → server")]
    assert gap and "3 reads" in gap[0]
    assert_tiles(trace)


def test_pipelined_requests_in_one_read_are_one_turn_and_say_so() -> None:
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    two = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    attach_request(connection, 1_001 * MS, request=two, sends=(100, 100))
    [trace] = attach_run(kernel_only(scenario))
    assert trace.path == "/a" and trace.details["pipelined_requests"] == 2
    assert any(
        n.startswith("pipelined: the first read carried 2 request lines") for n in trace.notes
    )
    assert trace.details["send_calls"] == 2


def test_a_pipelined_request_read_after_the_first_answer_is_its_own_request() -> None:
    """Both requests arrived at once, but the server read the second after answering the
    first: its read found no new segment (no receive path), which it says."""
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    attach_request(connection, 1_001 * MS, request=b"GET /a HTTP/1.1\r\n\r\n")
    attach_request(connection, 1_002 * MS, request=b"GET /b HTTP/1.1\r\n\r\n")
    items = kernel_only(scenario)
    second_read = [r for r in items if isinstance(r, records.RecvRecord)][1]
    items[items.index(second_read)] = second_read._replace(rx=None)
    traces = attach_run(items)
    assert [t.path for t in traces] == ["/a", "/b"]
    assert not traces[1].complete and traces[1].stage("recv") is not None
    assert any("receive path not observed" in n for n in traces[1].notes)


def test_a_large_response_in_many_sends_with_a_full_buffer_is_one_request() -> None:
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    sends = (65_536, EAGAIN, 65_536, EAGAIN, 30_000)
    want = attach_request(connection, 1_001 * MS, sends=sends, send_gap=400 * MS)
    attach_request(connection, 3_000 * MS)
    traces = attach_run(kernel_only(scenario))
    assert [t.seq for t in traces] == [1, 2]
    first = traces[0]
    assert_matches(first, want)
    assert first.details["send_calls"] == 5 and first.details["eagain"] == 2
    assert first.details["response_bytes"] == 161_072
    assert first.stage("send").duration_ns > 800 * MS  # the drains are in it


def test_an_interim_100_continue_does_not_end_the_request() -> None:
    """Expect: 100-continue: headers read, "100 Continue" sent, the body read, then the
    answer: one request, its server stage from the body's read to the answer."""
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    head = b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    attach_request(
        connection, 1_001 * MS, request=head, sends=(25,), status_line=b"HTTP/1.1 100 Continue"
    )
    body = attach_request(
        connection, 1_002 * MS, request=b"b" * 5000, status_line=b"HTTP/1.1 201 C"
    )
    traces = attach_run(kernel_only(scenario))
    assert len(traces) == 1
    [trace] = traces
    assert (trace.method, trace.path, trace.status) == ("POST", "/up", 201)
    assert trace.stage("server") is not None
    assert (trace.stage("server").start_ns, trace.stage("send").end_ns) == (
        body.stages["server"][0],
        body.end_ns,
    )
    assert trace.details["recv_calls"] == 2 and trace.details["send_calls"] == 2


def test_a_quiet_gap_longer_than_the_settle_time_ends_the_response() -> None:
    """Without a full buffer a response is over after send_settle_ns of quiet: a send that
    comes later, before any read, belongs to no request (counted)."""
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    attach_request(connection, 1_001 * MS, sends=(1000, 1000), send_gap=900 * MS)
    correlator = KernelOnlyCorrelator()
    traces = run(kernel_only(scenario), correlator)  # type: ignore[arg-type]
    assert len(traces) == 1 and traces[0].details["send_calls"] == 1
    assert correlator.stats.unmatched_sends == 1


# -- servers that block in recv, closes, lost answers -------------------------------------------


def test_a_thread_blocked_in_recv_counts_from_the_data_arrival() -> None:
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    want = attach_request(connection, 1_050 * MS, blocking=True)
    [trace] = attach_run(kernel_only(scenario))
    assert_matches(trace, want)
    assert BLOCKING_NOTE in trace.notes
    assert trace.details["recv_blocked_us"] > 40_000
    assert not [n for n in trace.notes if "inconsistent" in n or "out of order" in n]
    assert trace.stage("wakeup") is None and trace.stage("event_loop") is None


def test_a_request_without_an_answer_is_emitted_incomplete_when_the_connection_closes() -> None:
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    attach_request(connection, 1_001 * MS)
    attach_request(connection, 1_002 * MS, sends=())
    connection.close(1_010 * MS, by="client")
    correlator = KernelOnlyCorrelator(reorder_window_ns=1 * MS)
    out = [t for record in kernel_only(scenario) for t in correlator.feed(record)]
    out += correlator.advance(1_020 * MS)
    assert [t.seq for t in out] == [1, 2]
    last = out[1]
    assert not last.complete and last.outcome == "no_response" and last.status == 0
    assert NO_RESPONSE_NOTE in last.notes and last.stage("server") is None
    assert last.connection.closed_by == "client"
    assert correlator.stats.connections == 0


def test_a_read_without_captured_bytes_is_still_a_request_and_says_why() -> None:
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    attach_request(connection, 1_001 * MS, captured=False)
    [trace] = attach_run(kernel_only(scenario))
    assert trace.method == "" and trace.path == ""
    assert "request line: its first bytes were not captured" in trace.notes


def test_hook_records_are_refused() -> None:
    from tracer.correlate.synthetic import timing

    hook = timing(
        7,
        1,
        1,
        first_byte=1,
        headers_done=2,
        app_called=3,
        chunks=(),
        response_done=4,
        app_returned=4,
    )
    with pytest.raises(TypeError, match="kernel records only"):
        KernelOnlyCorrelator().feed(hook)  # type: ignore[arg-type]


def test_stage_boundaries_match_the_expected_ones_on_a_nic() -> None:
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    want = attach_request(connection, 1_001 * MS, dev="eth0")
    [trace] = attach_run(kernel_only(scenario))
    assert stage_map(trace) == want.stages and trace.details["irq"] == 33


# -- reading the captured bytes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "read", "want"),
    [
        (b"GET /a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n", 30, ("GET", "/a/b", "c=d", "1.1", 1, "")),
        (b"DELETE /item/7 HTTP/1.0\r\n", 25, ("DELETE", "/item/7", "", "1.0", 1, "")),
        (b"GET /" + b"a" * 91, 500, ("GET", "/" + "a" * 91, "", "", 1, "cut")),
        (b"\x16\x03\x01\x02\x00\x01", 517, ("", "", "", "", 1, "TLS")),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24, ("", "", "", "2", 1, "HTTP/2")),
        (b"hello world\r\n", 13, ("", "", "", "", 0, "not an HTTP request line")),
        (b"", 10, ("", "", "", "", 0, "not captured")),
        (
            b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nPOST /3 HT",
            60,
            ("GET", "/", "", "1.1", 3, ""),
        ),
    ],
)
def test_request_lines_are_read_from_the_first_bytes(head: bytes, read: int, want: tuple) -> None:
    got = parse_request_head(head, read)
    assert got[:5] == want[:5]
    assert (want[5] in got.problem) if want[5] else got.problem == ""


def test_status_codes_are_read_from_the_status_line() -> None:
    assert parse_status(b"HTTP/1.1 200 OK\r\n") == 200
    assert parse_status(b"HTTP/1.0 404 Not F") == 404
    assert parse_status(b"HTTP/1.1 20") == 0
    assert parse_status(b"garbage garbage!") == 0
    assert parse_status(b"") == 0


def test_captured_bytes_survive_decoding_and_json() -> None:
    raw = records.RtRecvHead()
    raw.recv.head.type = records.RT_REC_RECV_HEAD
    raw.recv.ret = 40
    raw.head_len = 5
    raw.data = b"GET /\xff"
    decoded = records.decode(bytes(raw))
    assert isinstance(decoded, records.RecvRecord) and decoded.head == b"GET /"
    assert records.from_json(records.to_json(decoded)) == decoded
    sent = records.RtSendHead()
    sent.send.head.type = records.RT_REC_SEND_HEAD
    sent.head_len = 16
    sent.data = b"HTTP/1.1 200 OK\r"
    out = records.decode(bytes(sent))
    assert isinstance(out, records.SendRecord) and out.head == b"HTTP/1.1 200 OK\r"
    assert records.from_json(records.to_json(out)) == out
    plain = records.decode(bytes(records.RtRecv(head=records.RtHead(type=records.RT_REC_RECV))))
    assert plain.head == b"" and "head" not in records.to_json(plain)


# -- the NIC driver's poll, named as with `reqtrace run` -------------------------------------


def test_softirq_names_the_nic_drivers_poll_function_in_attach_mode_too() -> None:
    scenario = Scenario()
    connection = new_connection(scenario, 1_000 * MS)
    attach_request(connection, 1_001 * MS, dev="eth0")
    polled = [
        r._replace(rx=r.rx._replace(flags=r.rx.flags | records.RT_RX_DRIVER_POLL))
        if isinstance(r, records.RecvRecord) and r.rx is not None
        else r
        for r in kernel_only(scenario)
    ]

    [named] = run(polled, KernelOnlyCorrelator(poll_functions={"eth0": "virtnet_poll"}))  # type: ignore[arg-type]
    [unnamed] = attach_run(polled)  # a replay that does not know the plan
    [plain] = run(kernel_only(scenario), KernelOnlyCorrelator(poll_functions={"eth0": "x"}))  # type: ignore[arg-type]

    assert "nic_irq" in stage_map(named) and "softirq" in stage_map(named)
    assert named.details["poll_function"] == "virtnet_poll"
    assert unnamed.details["poll_function"] == "the NIC driver's poll function"
    assert "poll_function" not in plain.details
