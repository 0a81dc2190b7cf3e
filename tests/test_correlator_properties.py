"""Correlator properties (hypothesis): whatever the interleaving and whatever is lost, no
crash, stages never overlap or go backwards and tile the total exactly (gaps are explicit
`unobserved` stages with a reason), every
request comes out exactly once, and memory stays within the limits."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracer.correlate.correlator import Correlator, CorrelatorLimits, FeedRecord
from tracer.correlate.synthetic import EAGAIN, MS, US, Expected, Scenario, arrival_order
from tracer.model.stages import STAGE_NAMES
from tracer.model.trace import RequestTrace
from tracer.records.hooks import RequestTiming

ORDER = {name: index for index, name in enumerate(STAGE_NAMES)}


@dataclass(frozen=True)
class RequestPlan:
    dev: str
    pipelined: int
    body_reads: int
    streaming: bool
    backpressure: bool
    loop_busy: bool
    gap_us: int


@dataclass(frozen=True)
class ConnectionPlan:
    requests: tuple[RequestPlan, ...]
    close: bool


request_plans = st.builds(
    RequestPlan,
    dev=st.sampled_from(["lo", "veth0", "eth0"]),
    pipelined=st.integers(0, 1),
    body_reads=st.integers(0, 2),
    streaming=st.booleans(),
    backpressure=st.booleans(),
    loop_busy=st.booleans(),
    gap_us=st.integers(300, 3000),
)
connection_plans = st.builds(
    ConnectionPlan,
    requests=st.lists(request_plans, min_size=1, max_size=4).map(tuple),
    close=st.booleans(),
)


def build(plans: list[ConnectionPlan]) -> tuple[list[FeedRecord], list[Expected]]:
    """Connections one after another on the same fd number (fd reuse), requests inside."""
    scenario = Scenario()
    expected: list[Expected] = []
    t = 1_000 * MS
    for index, plan in enumerate(plans):
        connection = scenario.connect(t, 40_000 + index, fd=9, sk=0x5000 + index % 2)
        t += 300 * US
        for request in plan.requests:
            expected += connection.request(
                t,
                dev=request.dev,
                pipelined=request.pipelined,
                body_reads=request.body_reads,
                upload_bytes=3000 * request.body_reads,
                response=(400, 300, 1500) if request.streaming else (1500,),
                send_plan=(1000, EAGAIN, 500) if request.backpressure else None,
                drain_delay=200 * US,
                loop_busy=request.loop_busy,
            )
            t += request.gap_us * US + 1 * MS
        if plan.close:
            connection.close(t)
        t += 1 * MS
    return scenario.records, expected


def check_invariants(traces: list[RequestTrace]) -> None:
    """Stages never overlap, never go backwards, come in canonical order (an `unobserved`
    gap may stand anywhere) and tile the request's total exactly: no silent empty space."""
    for trace in traces:
        previous_end = trace.start_ns
        previous_rank = -1
        for stage in trace.stages:
            assert stage.start_ns < stage.end_ns or stage.name != "unobserved", trace
            assert stage.start_ns <= stage.end_ns, trace
            assert stage.start_ns == previous_end, trace  # contiguous: gapless, no overlap
            if stage.name != "unobserved":
                assert ORDER[stage.name] > previous_rank, trace  # canonical order
                previous_rank = ORDER[stage.name]
            else:
                assert any(n.startswith("unobserved: ") for n in trace.notes), trace
            previous_end = stage.end_ns
        assert previous_end == trace.end_ns or not trace.stages, trace
        assert trace.start_ns <= trace.end_ns
        if trace.stages:
            assert sum(stage.duration_ns for stage in trace.stages) == trace.total_ns


def feed_all(correlator: Correlator, records: list[FeedRecord]) -> list[RequestTrace]:
    out = [trace for record in records for trace in correlator.feed(record)]
    return out + correlator.flush()


plans_strategy = st.lists(connection_plans, min_size=1, max_size=4)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans=plans_strategy)
def test_in_live_arrival_order_every_request_is_complete_and_exact(
    plans: list[ConnectionPlan],
) -> None:
    records, expected = build(plans)

    traces = feed_all(Correlator(), arrival_order(records))

    check_invariants(traces)
    assert len(traces) == len(expected)
    got = {(t.conn_id, t.seq): t for t in traces}
    conn_ids = sorted({t.conn_id for t in traces})
    seqs = [(c, s) for c in conn_ids for s in sorted(s for cc, s in got if cc == c)]
    for key, want in zip(seqs, expected, strict=True):
        trace = got[key]
        assert trace.complete, trace.notes
        assert {s.name: (s.start_ns, s.end_ns) for s in trace.stages} == want.stages
        assert (trace.start_ns, trace.end_ns) == (want.start_ns, want.end_ns)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plans=plans_strategy,
    data=st.data(),
    window_ns=st.sampled_from([0, 100 * US, 2 * MS, 250 * MS]),
)
def test_any_interleaving_and_any_loss_keeps_the_invariants(
    plans: list[ConnectionPlan], data: st.DataObject, window_ns: int
) -> None:
    records, _ = build(plans)
    dropped = data.draw(st.sets(st.integers(0, len(records) - 1)), label="dropped")
    kept = [r for i, r in enumerate(records) if i not in dropped]
    order = data.draw(st.permutations(kept), label="order")
    correlator = Correlator(reorder_window_ns=window_ns)
    traces: list[RequestTrace] = []
    for index, record in enumerate(order):
        traces += correlator.feed(record)
        if index % 7 == 3 and data.draw(st.booleans(), label="lost"):
            correlator.note_lost_records(2)
    traces += correlator.flush()

    check_invariants(traces)
    timings = [r for r in kept if isinstance(r, RequestTiming)]
    assert len(traces) == len(timings)  # every request fed comes out, exactly once
    assert sorted((t.conn_id, t.seq) for t in traces) == sorted((r.conn_id, r.seq) for r in timings)
    assert [t.id for t in traces] == list(range(1, len(traces) + 1))
    stats = correlator.stats
    assert stats.connections == 0 and stats.buffered_records == 0
    assert stats.requests_emitted == len(traces)
    assert stats.records_fed == len(order)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans=plans_strategy, data=st.data())
def test_memory_stays_within_the_limits(plans: list[ConnectionPlan], data: st.DataObject) -> None:
    records, _ = build(plans * 3)
    order = data.draw(st.permutations(records), label="order")
    limits = CorrelatorLimits(
        max_buffered_records=8,
        max_connections=2,
        max_records_per_connection=3,
        max_pending_per_connection=2,
        max_unjoined_accepts=2,
    )
    correlator = Correlator(reorder_window_ns=1 * MS, limits=limits)
    traces: list[RequestTrace] = []
    for record in order:
        traces += correlator.feed(record)
        footprint = correlator.footprint()
        assert footprint["connections"] <= 2
        assert footprint["buffered_records"] <= 8
        assert footprint["max_held_reads"] <= 3 and footprint["max_held_writes"] <= 3
        assert footprint["max_pending_requests"] <= 2
        assert footprint["unjoined_accepts"] <= 2
    traces += correlator.flush()

    check_invariants(traces)
    assert correlator.footprint()["connections"] == 0
    timings = sum(1 for r in records if isinstance(r, RequestTiming))
    assert len(traces) == timings
