"""Correlator robustness: lost, late and inconsistent records, and the bounds on memory.
Whatever is missing, the trace says so and later requests are not shifted."""

from __future__ import annotations

import pytest

from tracer.correlate.connection import Connection
from tracer.correlate.correlator import (
    MIN_DEADLINES_COMPACTION,
    Correlator,
    CorrelatorLimits,
    FeedRecord,
)
from tracer.correlate.stage_builder import RequestEvidence
from tracer.correlate.synthetic import (
    EAGAIN,
    MS,
    US,
    Scenario,
    arrival_order,
    assert_matches,
    by_seq,
    event_time,
    recv_record,
    run,
    rx_path,
    send_record,
    sock_id,
    stage_map,
    timing,
)
from tracer.model.trace import RequestTrace
from tracer.records.hooks import ConnectionOpened, RequestTiming
from tracer.records.kernel import RT_RX_PROCESS_CONTEXT, RecvRecord, SendRecord, StateRecord


def test_records_later_than_the_window_are_counted_and_do_not_break_anything() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS)
    connection.request(1_500 * MS)
    records = scenario.time_ordered()
    late = next(r for r in records if isinstance(r, RecvRecord))
    records.remove(late)
    records.append(late)  # arrives 500 ms late, far beyond a 10 ms window
    correlator = Correlator(reorder_window_ns=10 * MS)

    traces = run(records, correlator)

    assert correlator.stats.late_records >= 1
    assert len(traces) == 2
    assert not traces[0].complete
    assert traces[1].complete


def test_a_lost_read_marks_the_request_incomplete_and_says_why() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS)
    records = [r for r in scenario.time_ordered() if not isinstance(r, RecvRecord)]

    [trace] = run(records)

    assert not trace.complete
    assert [s.name for s in trace.stages] == ["parse", "loop_queue", "app", "handoff", "send"]
    assert any("no recv record delivered" in note for note in trace.notes)
    assert trace.start_ns == trace.stage("parse").start_ns  # type: ignore[union-attr]


def test_a_lost_write_marks_the_request_incomplete_without_shifting_the_next() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS)
    [expected] = connection.request(1_003 * MS)
    records = scenario.time_ordered()
    records.remove(next(r for r in records if isinstance(r, SendRecord)))

    traces = by_seq(run(records))
    first, second = traces[(1, 1)], traces[(1, 2)]

    assert not first.complete
    assert "send: 0 of 1200 response bytes seen in send records" in first.notes
    assert first.stage("send") is None
    assert_matches(second, expected)
    assert second.complete


def test_without_connection_opened_the_request_joins_by_pid_and_fd() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7, with_open=False)
    [expected] = connection.request(1_001 * MS)
    correlator = Correlator()

    [trace] = run(scenario.time_ordered(), correlator)

    assert_matches(trace, expected)
    assert trace.client == ("127.0.0.1", 50_000)
    assert correlator.stats.unmatched_hooks == 1


def test_without_kernel_records_the_trace_falls_back_to_hook_times() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7, with_handshake=False)
    connection.request(1_001 * MS)
    hooks = [r for r in scenario.time_ordered() if isinstance(r, RequestTiming | ConnectionOpened)]

    [trace] = run(hooks)

    assert not trace.complete
    assert [s.name for s in trace.stages] == ["parse", "loop_queue", "app", "unobserved"]
    assert any("no kernel records for this connection" in note for note in trace.notes)
    assert sum(s.duration_ns for s in trace.stages) == trace.total_ns
    timing_record = next(r for r in hooks if isinstance(r, RequestTiming))
    assert trace.start_ns == timing_record.first_byte_ns
    assert trace.end_ns == timing_record.response_done_ns


def test_lost_records_put_a_note_on_requests_in_flight_only() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS)
    connection.request(1_400 * MS)
    records = scenario.time_ordered()
    split = next(i for i, r in enumerate(records) if event_time(r) >= 1_400 * MS)
    correlator = Correlator()
    traces = [t for r in records[:split] for t in correlator.feed(r)]
    correlator.note_lost_records(3)
    traces += [t for r in records[split:] for t in correlator.feed(r)]
    traces += correlator.flush()

    first, second = traces
    assert any("lost 3 records" in note for note in first.notes)
    assert not any("lost" in note for note in second.notes)
    assert correlator.stats.lost_records == 3


def test_a_drain_that_never_comes_is_cut_short_at_the_drain_timeout() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS, response=(100_000,), send_plan=(65_536, EAGAIN, 34_464))
    records = scenario.time_ordered()
    drain = [r for r in records if isinstance(r, SendRecord)][-1]
    records.remove(drain)
    limits = CorrelatorLimits(drain_timeout_ns=500 * MS)
    correlator = Correlator(reorder_window_ns=10 * MS, limits=limits)
    for record in records:
        assert correlator.feed(record) == []

    assert correlator.advance(1_400 * MS) == []  # still within the drain timeout
    [trace] = correlator.advance(1_600 * MS)
    assert not trace.complete
    assert "send: the response was still draining at the drain timeout" in trace.notes
    assert "send: 65536 of 100000 response bytes seen in send records" in trace.notes


def test_flush_finishes_requests_still_waiting() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS, response=(100_000,), send_plan=(65_536, EAGAIN, 34_464))
    records = scenario.time_ordered()
    drain = [r for r in records if isinstance(r, SendRecord)][-1]
    records.remove(drain)
    correlator = Correlator()
    assert [t for r in records for t in correlator.feed(r)] == []

    [trace] = correlator.flush()
    assert not trace.complete
    assert any("the record stream ended" in note for note in trace.notes)
    assert correlator.stats.connections == 0 and correlator.stats.buffered_records == 0


def test_connections_are_bounded_and_evictions_counted() -> None:
    limits = CorrelatorLimits(max_connections=8, max_records_per_connection=4)
    correlator = Correlator(reorder_window_ns=1 * MS, limits=limits)
    scenario = Scenario()
    for i in range(100):  # reads on sockets nobody announced, never answered
        connection = scenario.connect(1_000 * MS + i * MS, 40_000 + i, fd=100 + i)
        for j in range(6):
            at = 1_000 * MS + i * MS + j * 100 * US
            scenario.add(
                recv_record(
                    connection.sock,
                    connection.fd,
                    enter=at,
                    exit=at + US,
                    ret=10,
                    rx=rx_path(at - 20 * US),
                )
            )
    for record in scenario.time_ordered():
        correlator.feed(record)
        assert correlator.stats.connections <= 8

    stats = correlator.stats
    assert stats.evicted_connections > 0
    assert stats.evicted_records > 0
    correlator.flush()
    assert correlator.stats.connections == 0


def test_the_reorder_window_is_bounded() -> None:
    correlator = Correlator(limits=CorrelatorLimits(max_buffered_records=16))
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    for i in range(20):
        connection.request(1_001 * MS + i * 100 * US)
    for record in scenario.time_ordered():
        correlator.feed(record)
        assert correlator.stats.buffered_records <= 16
    assert correlator.stats.forced_releases > 0


def test_idle_connections_are_swept() -> None:
    limits = CorrelatorLimits(idle_timeout_ns=1_000 * MS)
    correlator = Correlator(reorder_window_ns=1 * MS, limits=limits)
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS)
    for record in scenario.time_ordered():
        correlator.feed(record)
    assert correlator.stats.connections == 1
    # Traffic elsewhere, much later: enough records to trigger a sweep.
    other = Scenario()
    for i in range(9000):
        at = 5_000 * MS + i * 10 * US
        other.add(StateRecord(at, 0, 0, 0, connection.sock, 1, 7, 0, -1))  # unknown: ignored
    for record in other.records:
        correlator.feed(record)
    assert correlator.stats.connections == 0
    assert correlator.stats.evicted_connections == 1


def test_unknown_inputs_are_rejected() -> None:
    with pytest.raises(TypeError):
        Correlator().feed("not a record")  # type: ignore[arg-type]


def test_deadlines_of_requests_finished_early_do_not_pile_up() -> None:
    """Each response hits a full socket buffer (so it may wait 60 s for its drain), but
    the drain comes at once; then the connection closes and lingers 5 s."""
    scenario = Scenario()
    for i in range(3000):
        at = 1_000 * MS + i * 500 * US
        connection = scenario.connect(at, 20_000 + i, fd=7)
        connection.request(
            at + 200 * US, response=(3000,), send_plan=(2000, EAGAIN, 1000), drain_delay=1 * US
        )
        connection.close(at + 450 * US)
    correlator = Correlator(reorder_window_ns=1 * MS)
    traces: list[RequestTrace] = []
    most = 0
    for index, record in enumerate(scenario.time_ordered()):
        traces += correlator.feed(record)
        if index % 50 == 0:
            most = max(most, correlator.footprint()["deadlines"])
    traces += correlator.flush()

    assert len(traces) == 3000 and all(t.complete for t in traces)
    assert 2000 < most <= MIN_DEADLINES_COMPACTION + 1  # stale 60 s deadlines were dropped


def test_a_lost_hook_record_leaves_its_reads_and_writes_unmatched_not_shifted() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS, path="/lost")
    [expected] = connection.request(1_003 * MS, path="/kept")
    records = [
        r
        for r in scenario.time_ordered()
        if not (isinstance(r, RequestTiming) and r.path == "/lost")
    ]
    correlator = Correlator()

    [trace] = run(records, correlator)

    assert trace.path == "/kept"
    assert_matches(trace, expected)
    assert trace.complete
    assert (correlator.stats.unmatched_recvs, correlator.stats.unmatched_sends) == (1, 1)


def _with_rx(records: list[FeedRecord], which: int, **changes: int) -> list[FeedRecord]:
    """The records with the `which`-th read's receive path changed."""
    reads = [r for r in records if isinstance(r, RecvRecord)]
    target = reads[which]
    assert target.rx is not None
    changed = target._replace(rx=target.rx._replace(**changes))
    return [changed if r is target else r for r in records]


def test_nic_and_softirq_times_of_an_earlier_packet_are_not_used() -> None:
    """Seen live on lo: the skb-joined times of a segment came from a packet 50 ms older."""
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS)
    [expected] = connection.request(1_051 * MS)
    stale = 1_001 * MS + 5 * US  # before the previous read even started
    records = _with_rx(
        scenario.time_ordered(),
        1,
        netif_rx_ts=stale,
        softirq_raise_ts=stale + 1 * US,
        softirq_entry_ts=stale + 2 * US,
        poll_start_ts=stale + 2 * US,
        netif_receive_ts=stale + 3 * US,
    )

    first, second = run(records)

    assert first.complete
    assert [s.name for s in second.stages][:4] == ["unobserved", "wakeup", "event_loop", "recv"]
    assert any("unobserved: start → wakeup: the NIC and softirq times" in n for n in second.notes)
    assert stage_map(second)["wakeup"] == expected.stages["wakeup"]
    assert any("belong to an earlier packet" in note for note in second.notes)
    assert not second.complete
    assert second.start_ns == expected.stages["ip_tcp"][0] + 3 * US  # tcp_ts: first kept time


def test_a_first_segment_with_a_gap_no_softirq_can_have_is_stale_too() -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_060 * MS)
    handshake = 1_000 * MS + 20 * US  # the handshake's packet, 60 ms before the data
    records = _with_rx(
        scenario.time_ordered(),
        0,
        netif_rx_ts=handshake,
        softirq_entry_ts=handshake + 2 * US,
        poll_start_ts=handshake + 2 * US,
        netif_receive_ts=handshake + 3 * US,
    )

    [trace] = run(records)

    assert trace.stage("ip_tcp") is None and trace.stage("backlog") is None
    assert any("belong to an earlier packet" in note for note in trace.notes)


def test_a_segment_processed_later_from_the_socket_backlog_keeps_its_stages() -> None:
    """TCP ran it when the reader released the socket: a long ip_tcp is real then."""
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    [expected] = connection.request(1_060 * MS)
    rx = rx_path(1_060 * MS)
    records = _with_rx(
        scenario.time_ordered(),
        0,
        netif_receive_ts=rx.netif_receive_ts - 20 * MS,
        netif_rx_ts=rx.netif_rx_ts - 20 * MS,
        softirq_raise_ts=rx.softirq_raise_ts - 20 * MS,
        softirq_entry_ts=rx.softirq_entry_ts - 20 * MS,
        poll_start_ts=rx.poll_start_ts - 20 * MS,
        flags=rx.flags | RT_RX_PROCESS_CONTEXT,
    )

    [trace] = run(records)

    assert stage_map(trace)["ip_tcp"] == (rx.netif_receive_ts - 20 * MS, rx.data_ready_ts)
    assert any("from the socket backlog" in note for note in trace.notes)
    assert trace.complete
    assert trace.stage("send") is not None and stage_map(trace)["send"] == expected.stages["send"]


def test_writes_are_kept_in_time_order_and_a_response_takes_only_its_own() -> None:
    """A late write record is put in its place; a response takes its writes from where
    its first chunk starts, leaving the backlog of later responses' writes (waiting for
    their hook records) untouched and in order."""
    sock = sock_id(50_000)
    connection = Connection(1, 1_000 * MS)
    at = [1_010 * MS + i * MS for i in range(6)]
    for enter in (at[0], at[2], at[3], at[1], at[5], at[4]):  # two arrive late
        connection.add_send(send_record(sock, 7, enter=enter, exit=enter + 5 * US, ret=100), 64)
    assert [s.enter_ts for s in connection.sends] == at

    second = timing(
        7, 1, 2,
        first_byte=at[1] - 300 * US, headers_done=at[1] - 250 * US,
        app_called=at[1] - 200 * US, chunks=((at[1] - 1 * US, 100),),
        response_done=at[1] - 1 * US, app_returned=at[1],
    )  # fmt: skip
    evidence = RequestEvidence(second, at[1] + 10 * US)
    evidence.backpressured = True  # take writes without the "lost, not late" checks
    connection.take_sends(evidence, next_first_chunk_ns=at[2] - 1 * US)

    assert [(send.enter_ts, taken) for send, taken in evidence.sends] == [(at[1], 100)]
    assert evidence.bytes_left == 0
    assert [s.enter_ts for s in connection.sends] == [at[0], *at[2:]]
    assert connection.send_left == [100] * 5
    assert connection.drop_sends_before(at[3]) == 2
    assert [s.enter_ts for s in connection.sends] == at[3:]


def test_responses_waiting_for_lost_writes_are_not_asked_again_on_every_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under record loss many responses wait for writes that never come. Each new record
    must not make the correlator ask every one of them for writes again (that made the
    work per record grow with the backlog: the live pipeline's largest cost under load)."""
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    requests = 400
    for i in range(requests):
        connection.request(1_010 * MS + i * 100 * US)
    connection.close(1_010 * MS + requests * 100 * US + 1 * MS)
    # The first half of the responses' writes were lost (the ring buffer was full): one
    # write each, in the order they happened.
    sends = [record for record in scenario.records if isinstance(record, SendRecord)]
    assert len(sends) == requests
    lost = {id(record) for record in sends[: requests // 2]}
    records = arrival_order([r for r in scenario.records if id(r) not in lost])
    calls = 0
    take_sends = Connection.take_sends

    def counted(self: Connection, ev: RequestEvidence, next_first_chunk_ns: int) -> None:
        nonlocal calls
        calls += 1
        take_sends(self, ev, next_first_chunk_ns)

    monkeypatch.setattr(Connection, "take_sends", counted)
    traces = run(records)
    assert len(traces) == requests
    assert sum(not trace.complete for trace in traces) == requests // 2
    assert calls <= 2 * requests  # was 100,300: every waiting response, on every record
