"""Correlator: synthetic record sequences for each situation it must attribute right
(keep-alive, pipelining, uploads, large and streamed responses, fd and socket reuse,
retransmits, the two streams out of order)."""

from __future__ import annotations

from tracer.correlate.correlator import (
    Correlator,
    FeedRecord,
)
from tracer.correlate.synthetic import (
    EAGAIN,
    MS,
    US,
    Scenario,
    arrival_order,
    assert_matches,
    by_seq,
    recv_record,
    run,
    rx_path,
    send_record,
    stage_map,
    timing,
)
from tracer.model.stages import STAGE_NAMES
from tracer.records.hooks import ConnectionOpened, RequestTiming, ServerStarted
from tracer.records.kernel import RT_RX_DRIVER_POLL, RecvRecord, SendRecord, StateRecord


def test_one_request_on_loopback_gets_every_stage_in_order() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    [expected] = connection.request(1_001 * MS, path="/hello")

    [trace] = run(scenario.time_ordered())

    assert_matches(trace, expected)
    assert [s.name for s in trace.stages] == [
        "backlog",
        "softirq",
        "ip_tcp",
        "wakeup",
        "event_loop",
        "recv",
        "parse",
        "loop_queue",
        "app",
        "handoff",
        "send",
    ]
    assert sum(s.duration_ns for s in trace.stages) == trace.total_ns  # leaves tile the total
    assert trace.complete
    assert trace.notes == ("nic_irq: no hardware interrupt: packet came from lo (software device)",)
    assert (trace.method, trace.path, trace.status) == ("GET", "/hello", 200)
    assert trace.client == ("127.0.0.1", 50_000)
    assert trace.server == ("127.0.0.1", 8000)
    assert (trace.pid, trace.fd, trace.conn_id, trace.seq) == (4242, 7, 1, 1)
    assert trace.details["wake_path_us"] == 2.0
    assert trace.details["run_queue_us"] == 8.0
    assert trace.details["send_bytes"] == 1200
    # the synthetic send hands its last segment to the device 6 µs after entering
    send = next(s for s in trace.stages if s.name == "send")
    assert trace.details["send_after_xmit_us"] == (send.duration_ns - 6 * US) / 1000


def test_nic_path_has_an_interrupt_stage_and_no_backlog() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    [expected] = connection.request(1_001 * MS, dev="eth0")

    [trace] = run(scenario.time_ordered())

    assert_matches(trace, expected)
    assert trace.stages[0].name == "nic_irq"
    assert trace.details["irq"] == 33
    assert any(note.startswith("backlog: not queued on a CPU backlog") for note in trace.notes)


def _polled_by_driver(records: list[FeedRecord]) -> list[FeedRecord]:
    """The records, with every receive path marked as delivered in a driver's poll."""
    return [
        r._replace(rx=r.rx._replace(flags=r.rx.flags | RT_RX_DRIVER_POLL))
        if isinstance(r, RecvRecord) and r.rx is not None
        else r
        for r in records
    ]


def test_softirq_names_the_nic_drivers_poll_function_that_delivered_the_packet() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS, dev="eth0")
    records = _polled_by_driver(scenario.time_ordered())

    [named] = run(records, Correlator(poll_functions={"eth0": "virtnet_poll"}))
    [unnamed] = run(records)  # a replay that does not know the run's plan
    [plain] = run(scenario.time_ordered(), Correlator(poll_functions={"eth0": "virtnet_poll"}))

    assert "softirq" in stage_map(named)
    assert named.details["poll_function"] == "virtnet_poll"
    assert unnamed.details["poll_function"] == "the NIC driver's poll function"
    assert "poll_function" not in plain.details  # no driver poll seen: nothing claimed


def test_connection_facts_come_from_handshake_accept_and_latest_segment() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS, dev="eth0")

    [trace] = run(scenario.time_ordered())

    facts = trace.connection
    assert facts.handshake_us == 40.0  # SYN_RECV at 1000 ms, ESTABLISHED 40 µs later
    assert facts.accept_queue_us == 50.0  # ESTABLISHED -> accept returned
    assert (facts.srtt_us, facts.rcv_wnd, facts.snd_wnd) == (300, 64000, 62000)
    assert facts.requests_served == 1


def test_keep_alive_requests_each_get_their_own_read_and_write() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    expected = [connection.request(1_001 * MS + i * 2 * MS, path=f"/{i}")[0] for i in range(5)]

    traces = run(arrival_order(scenario.records))

    assert [t.path for t in traces] == [f"/{i}" for i in range(5)]
    assert [t.id for t in traces] == [1, 2, 3, 4, 5]
    for trace, want in zip(traces, expected, strict=True):
        assert_matches(trace, want)
        assert trace.complete
        assert trace.details["recv_calls"] == 1 and trace.details["send_calls"] == 1
    assert [t.connection.requests_served for t in traces] == [1, 2, 3, 4, 5]


def test_pipelined_requests_share_one_read_and_only_the_first_has_kernel_stages() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    first, second = connection.request(1_001 * MS, pipelined=1)

    traces = by_seq(run(arrival_order(scenario.records)))

    assert_matches(traces[(1, 1)], first)
    assert_matches(traces[(1, 2)], second)
    later = traces[(1, 2)]
    assert [s.name for s in later.stages] == [
        "pipeline_wait",
        "parse",
        "loop_queue",
        "app",
        "handoff",
        "send",
    ]
    assert later.notes[0].startswith("pipelined: arrived in the same read as request 1")
    assert later.complete


def test_upload_body_reads_are_the_body_stage_with_details() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    [expected] = connection.request(1_001 * MS, method="POST", body_reads=3, upload_bytes=30_000)

    [trace] = run(arrival_order(scenario.records))

    assert_matches(trace, expected)
    assert trace.details["recv_calls"] == 4
    assert trace.details["recv_bytes"] == 300 + 30_000
    assert trace.details["body_recv_calls"] == 3
    assert trace.details["request_body_bytes"] == 30_000
    assert [s.name for s in trace.stages].count("recv") == 1
    # The upload is the body stage; the app stage starts once the body is complete.
    body = trace.stage("body")
    assert body is not None and body.start_ns == trace.stage("parse").end_ns  # type: ignore[union-attr]
    assert trace.details["app_waited_for_body_us"] > 0


def test_large_response_in_several_syscalls_with_backpressure() -> None:
    """A short write, EAGAIN, then the drain 30 ms later, after the hook record came."""
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    [expected] = connection.request(
        1_001 * MS,
        response=(100_000,),
        send_plan=(65_536, EAGAIN, 34_464),
        drain_delay=30 * MS,
    )
    connection.request(1_040 * MS)  # the next request must not steal the drain

    first, second = run(arrival_order(scenario.records))

    assert_matches(first, expected)
    assert first.complete
    assert first.details["send_calls"] == 3
    assert first.details["eagain"] == 1
    assert first.details["send_bytes"] == 100_000
    assert second.complete and second.details["send_bytes"] == 1200


def test_streaming_sends_inside_the_app_are_details_only() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    [expected] = connection.request(1_001 * MS, response=(500, 800, 800, 5))

    [trace] = run(arrival_order(scenario.records))

    assert_matches(trace, expected)
    assert trace.details["streaming_send_calls"] == 3
    assert trace.details["streaming_send_bytes"] == 2100
    assert trace.details["send_calls"] == 4
    app, send = trace.stage("app"), trace.stage("send")
    assert app is not None and send is not None and send.start_ns >= app.end_ns


def test_fd_reuse_never_mixes_two_connections() -> None:
    scenario = Scenario()
    old = scenario.connect(1_000 * MS, 50_001, fd=9)
    old.request(1_001 * MS, path="/old")
    old.close(1_003 * MS, by="server")
    new = scenario.connect(1_004 * MS, 50_002, fd=9)  # same fd number, new client
    new.request(1_005 * MS, path="/new")

    traces = run(arrival_order(scenario.records))

    assert {t.path: t.client for t in traces} == {
        "/old": ("127.0.0.1", 50_001),
        "/new": ("127.0.0.1", 50_002),
    }
    assert all(t.complete for t in traces)
    new_trace = next(t for t in traces if t.path == "/new")
    assert new_trace.connection.requests_served == 1
    assert new_trace.connection.accept_queue_us == 50.0


def test_a_reused_socket_address_starts_a_new_connection() -> None:
    scenario = Scenario()
    old = scenario.connect(1_000 * MS, 50_001, fd=9, sk=0xABC000)
    old.request(1_001 * MS, path="/old")
    old.close(1_003 * MS)
    new = scenario.connect(1_004 * MS, 50_001, fd=10, sk=0xABC000)  # same sk, same port
    new.request(1_005 * MS, path="/new")

    traces = run(arrival_order(scenario.records))

    assert [(t.path, t.conn_id, t.connection.requests_served) for t in traces] == [
        ("/old", 1, 1),
        ("/new", 2, 1),
    ]
    assert traces[0].connection.closed_by == ""
    assert all(t.complete for t in traces)


def test_retransmits_count_for_the_request_in_flight_then_for_the_connection() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS)
    connection.retransmit(1_001 * MS + 50 * US)  # inside the first request
    connection.retransmit(1_002 * MS)  # between requests
    connection.drop(1_002 * MS + 10 * US)
    connection.request(1_003 * MS)

    first, second = run(arrival_order(scenario.records))

    assert first.details.get("retransmits") == 1
    assert "retransmits" not in second.details
    assert second.connection.retransmits == 2
    assert second.connection.drops == 1
    for trace in (first, second):
        starts = [s.start_ns for s in trace.stages]
        assert starts == sorted(starts)


def test_the_hook_record_may_arrive_before_or_after_the_kernel_records() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    for i in range(10):
        connection.request(1_001 * MS + i * 3 * MS)
    in_time = run(scenario.time_ordered())
    hooks_first = sorted(scenario.records, key=lambda r: not isinstance(r, RequestTiming))
    kernel_first = sorted(scenario.records, key=lambda r: isinstance(r, RequestTiming))

    for order in (hooks_first, kernel_first, arrival_order(scenario.records)):
        traces = run(order)
        assert [t.to_json() for t in traces] == [t.to_json() for t in in_time]


def test_advance_lets_a_quiet_stream_complete_without_flush() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS)
    correlator = Correlator(reorder_window_ns=100 * MS)
    emitted = [t for r in scenario.time_ordered() for t in correlator.feed(r)]
    assert emitted == []

    assert correlator.advance(1_050 * MS) == []
    [trace] = correlator.advance(1_200 * MS)
    assert trace.complete


def test_data_that_arrives_while_the_loop_is_busy_waits_in_loop_busy_not_wakeup() -> None:
    """The loop thread entered epoll only after the data was ready: it was running other
    work, not asleep, so the wait is the loop's (loop_busy), not a scheduler wakeup."""
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    [expected] = connection.request(1_001 * MS, loop_busy=True)

    [trace] = run(scenario.time_ordered())

    assert_matches(trace, expected)
    assert trace.stage("wakeup") is None and trace.stage("loop_busy") is not None
    assert any(note.startswith("wakeup: the event loop was not asleep") for note in trace.notes)
    assert "wake_path_us" not in trace.details


def test_a_read_without_waiting_in_epoll_has_no_wakeup_stage() -> None:
    sock_records = Scenario()
    connection = sock_records.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS)
    records = sock_records.time_ordered()
    recv = next(r for r in records if isinstance(r, RecvRecord))
    stale = recv._replace(epoll_enter_ts=900 * MS, epoll_exit_ts=901 * MS, wakeup_ts=0)
    records[records.index(recv)] = stale

    [trace] = run(records)

    assert trace.stage("wakeup") is None
    assert any(
        note.startswith("wakeup: the event loop read without waiting") for note in trace.notes
    )
    event_loop = trace.stage("event_loop")
    assert event_loop is not None and event_loop.start_ns == recv.rx.data_ready_ts  # type: ignore[union-attr]


def test_a_client_with_an_ipv4_mapped_ipv6_address_joins() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7, with_open=False)
    [expected] = connection.request(1_001 * MS)
    opened = ConnectionOpened(
        4242, 4243, 7, 1, ("::ffff:127.0.0.1", 50_000), ("::", 8000), 1_000 * MS + 100 * US
    )
    correlator = Correlator()

    [trace] = run([opened, *scenario.time_ordered()], correlator)

    assert_matches(trace, expected)
    assert trace.client == ("127.0.0.1", 50_000)
    assert correlator.stats.unmatched_hooks == 0


def test_unix_socket_requests_are_complete_with_a_note() -> None:
    opened = ConnectionOpened(4242, 4243, 11, 1, ("", 0), ("/run/app.sock", 0), 1_000 * MS)
    request = timing(
        11,
        1,
        1,
        first_byte=1_001 * MS,
        headers_done=1_001 * MS + 10 * US,
        app_called=1_001 * MS + 20 * US,
        chunks=((1_001 * MS + 50 * US, 100),),
        response_done=1_001 * MS + 60 * US,
        app_returned=1_001 * MS + 70 * US,
    )

    [trace] = run([opened, request])

    assert trace.complete
    assert any("unix socket" in note for note in trace.notes)
    assert [s.name for s in trace.stages] == ["parse", "loop_queue", "app", "unobserved"]
    assert any(note.startswith("unobserved: app → end: unix socket") for note in trace.notes)


def test_same_input_gives_the_same_traces() -> None:
    scenario = Scenario()
    for i in range(4):
        connection = scenario.connect(1_000 * MS + i * MS, 50_000 + i, fd=7 + i)
        for j in range(3):
            connection.request(1_010 * MS + j * 2 * MS + i * 300 * US, pipelined=j % 2)
    records = arrival_order(scenario.records)

    one, two = run(records), run(records)

    assert [t.to_json() for t in one] == [t.to_json() for t in two]
    assert len(one) == 4 * (1 + 2 + 1)  # per connection: 3 reads, one with 2 requests


def test_every_canonical_stage_can_appear() -> None:
    """nic_irq and backlog never both: across a NIC upload and a lo request all names show up."""
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS, dev="eth0", method="POST", body_reads=2, upload_bytes=8_000)
    connection.request(1_003 * MS, dev="lo", pipelined=1)
    connection.request(1_005 * MS, dev="lo", loop_busy=True)
    records = scenario.time_ordered()
    last_send = max(i for i, r in enumerate(records) if isinstance(r, SendRecord))
    names = {s.name for t in run(records[:last_send] + records[last_send + 1 :]) for s in t.stages}
    # startup: see the next test; server: attach mode only (tests/test_attach_correlator.py)
    assert names == set(STAGE_NAMES) - {"startup", "server"}


def test_writes_before_a_response_was_handed_over_are_not_its_own() -> None:
    """A stray write (e.g. "100 Continue") before the first chunk is not the response."""
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    [expected] = connection.request(1_001 * MS)
    stray = send_record(
        connection.sock, 7, enter=1_001 * MS + 60 * US, exit=1_001 * MS + 61 * US, ret=25
    )
    correlator = Correlator()

    [trace] = run([*scenario.time_ordered(), stray], correlator)

    assert_matches(trace, expected)
    assert correlator.stats.unmatched_sends == 1


def test_headers_split_over_two_reads_count_both_and_parse_from_the_first() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    sock, t = connection.sock, 1_001 * MS
    scenario.add(recv_record(sock, 7, enter=t, exit=t + 5 * US, ret=100, rx=rx_path(t - 30 * US)))
    later = t + 2 * MS  # a slow client sends the rest of its headers
    scenario.add(
        recv_record(sock, 7, enter=later, exit=later + 5 * US, ret=80, rx=rx_path(later - 30 * US))
    )
    chunk = later + 100 * US
    scenario.add(send_record(sock, 7, enter=chunk + 3 * US, exit=chunk + 20 * US, ret=500))
    request = timing(
        7,
        connection.conn_id,
        1,
        first_byte=t + 10 * US,
        headers_done=later + 20 * US,
        app_called=later + 30 * US,
        chunks=((chunk, 500),),
        response_done=chunk + 25 * US,
        app_returned=chunk + 30 * US,
    )
    scenario.add(request)

    [trace] = run(scenario.time_ordered())

    assert trace.complete
    assert stage_map(trace)["recv"] == (t, t + 5 * US)
    assert stage_map(trace)["parse"] == (t + 5 * US, later + 20 * US)
    assert trace.details["recv_calls"] == 2 and trace.details["header_recv_calls"] == 1
    assert trace.details["recv_bytes"] == 180


def test_a_bad_request_answered_by_the_server_has_no_app_stage() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    sock, t = connection.sock, 1_001 * MS
    scenario.add(recv_record(sock, 7, enter=t, exit=t + 5 * US, ret=40, rx=rx_path(t - 30 * US)))
    scenario.add(send_record(sock, 7, enter=t + 40 * US, exit=t + 50 * US, ret=90))
    answered = timing(
        7,
        connection.conn_id,
        1,
        first_byte=t + 10 * US,
        headers_done=0,
        app_called=0,
        chunks=((t + 38 * US, 90),),
        response_done=t + 45 * US,
        app_returned=0,
        status=400,
        outcome="bad_request",
    )
    scenario.add(answered._replace(body_done_ns=0))

    [trace] = run(scenario.time_ordered())

    assert trace.complete
    assert [s.name for s in trace.stages][-3:] == ["recv", "unobserved", "send"]
    assert "unobserved: recv → send: the request headers never completed" in " ".join(trace.notes)
    assert "app: the app was not called (outcome bad_request)" in trace.notes
    assert "parse: the request headers never completed (outcome bad_request)" in trace.notes
    assert trace.status == 400 and trace.outcome == "bad_request"


def test_resets_and_a_half_close_show_in_the_connection_facts() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS)
    connection.reset(1_001 * MS + 300 * US)  # between the requests
    [second] = connection.request(1_002 * MS)
    fin_at = second.stages["recv"][1] + 1 * US  # the client shut its side after sending
    scenario.add(StateRecord(fin_at, 1, 0, 0, connection.sock, 1, 8, 0, -1))
    connection.close(1_003 * MS, by="server")
    correlator = Correlator()

    first, last = run(scenario.time_ordered(), correlator)

    assert (first.connection.resets, first.connection.closed_by) == (0, "")
    assert (last.connection.resets, last.connection.closed_by) == (1, "client")
    assert "resets" not in last.details  # not during the request itself
    assert correlator.stats.unmatched_kernel_events == 0
    assert correlator.stats.connections == 0


def test_a_request_that_came_while_the_app_started_waits_in_startup() -> None:
    """Data ready before the server began to accept (ServerStarted): the wait until then is
    `startup` (the accept queue while the app started), the rest of the loop's wait after."""
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    [expected] = connection.request(1_001 * MS, loop_busy=True)
    ready, epoll_exit = expected.stages["loop_busy"]
    scenario.add(ServerStarted(4242, 4243, ready + 20 * US))

    [trace] = run(scenario.time_ordered())

    assert stage_map(trace)["startup"] == (ready, ready + 20 * US)
    assert stage_map(trace)["loop_busy"] == (ready + 20 * US, epoll_exit)
    assert trace.stage("wakeup") is None
    assert sum(s.duration_ns for s in trace.stages) == trace.total_ns
