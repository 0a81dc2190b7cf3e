"""The dashboard's trace store: bounded list in time order, thinned, filtered, aggregated."""

from __future__ import annotations

import random

import pytest

from dashboards.aggregates import (
    BUCKETS,
    Aggregates,
    bucket_bounds,
    bucket_of,
)
from dashboards.synthetic import TraceSource
from dashboards.trace_store import (
    INTERVAL_NS,
    KEEP_FAILED,
    KEEP_NEWEST,
    KEEP_SLOWEST,
    FilterError,
    Gap,
    TraceStore,
)
from tracer.model.stages import STAGE_NAMES
from tracer.model.trace import RequestTrace

from .dashboard_fixtures import BASE_NS, make_trace


def _store(n: int = 20) -> TraceStore:
    store = TraceStore(held_capacity=100, list_capacity=100, thin=False)
    store.add(
        [
            make_trace(
                i,
                path="/slow" if i % 5 == 0 else "/fast",
                app_us=20_000 if i % 5 == 0 else 40,
                status=500 if i == 7 else 200,
            )
            for i in range(n)
        ]
    )
    return store


def _traces(rows: list[RequestTrace | Gap]) -> list[RequestTrace]:
    return [row for row in rows if isinstance(row, RequestTrace)]


def test_the_list_and_the_held_ring_never_exceed_their_bounds() -> None:
    store = TraceStore(held_capacity=50, list_capacity=30)
    source = TraceSource()
    end = BASE_NS
    for _ in range(200):  # 200 batches of 1,000: 8,000 req/s for 25 s
        store.add(source.batch(1_000, end, end + INTERVAL_NS))
        end += INTERVAL_NS
        assert len(store.rows) <= 30 and len(store.held) <= 50
    assert store.total_seen == 200_000 and store.aggregates.count == 200_000
    assert len(store.view()) == 30


def test_a_burst_keeps_the_slowest_failed_and_newest_and_counts_the_rest() -> None:
    store = TraceStore()
    burst = [
        make_trace(i, start_ns=BASE_NS + i * 1_000, app_us=50 + (i * 7919) % 1000)
        for i in range(1_000)
    ]
    burst[500] = make_trace(500, start_ns=BASE_NS + 500_000, status=500)
    store.add(burst)
    store.close_intervals()
    rows = store.rows
    listed = _traces(rows)
    (gap,) = [row for row in rows if isinstance(row, Gap)]
    assert len(listed) <= KEEP_SLOWEST + KEEP_FAILED + KEEP_NEWEST
    assert gap.hidden + len(listed) == gap.received == 1_000
    assert store.not_listed == gap.hidden and store.matched == 1_000
    slowest = sorted(burst, key=lambda t: t.total_ns, reverse=True)[:KEEP_SLOWEST]
    assert {t.id for t in slowest} <= {t.id for t in listed}
    assert 500 in {t.id for t in listed}  # the failed one
    newest = sorted(burst, key=lambda t: t.start_ns)[-KEEP_NEWEST:]
    assert {t.id for t in newest} <= {t.id for t in listed}
    # Time order: the gap sits after the hidden requests it stands for, before the newest.
    assert rows[-KEEP_NEWEST - 1] is gap
    assert store.thinning_since(max(t.end_ns for t in burst))


def test_few_requests_per_interval_are_all_listed() -> None:
    store = TraceStore()
    store.add([make_trace(i, start_ns=BASE_NS + i * 20_000_000) for i in range(40)])
    store.close_intervals()
    assert len(_traces(store.rows)) == 40 and store.not_listed == 0


def test_an_interval_is_thinned_as_one_however_its_requests_are_batched() -> None:
    store = TraceStore()
    traces = [make_trace(i, start_ns=BASE_NS + i * 100_000) for i in range(1_000)]
    for at in range(0, 1_000, 40):  # 25 batches, as the pipeline emits them
        store.add(traces[at : at + 40])
    store.close_intervals()
    gaps = [row for row in store.rows if isinstance(row, Gap)]
    listed = _traces(store.rows)
    intervals = {t.end_ns // INTERVAL_NS for t in traces}
    assert len(gaps) == len(intervals)  # one gap per interval, not per batch
    assert len(listed) + sum(gap.hidden for gap in gaps) == 1_000
    assert len(listed) <= len(intervals) * (KEEP_SLOWEST + KEEP_FAILED + KEEP_NEWEST)


def test_time_order_is_start_order_even_when_slow_requests_complete_late() -> None:
    store = TraceStore(thin=False)
    fast = make_trace(2, start_ns=BASE_NS + 1_000_000, app_us=10)
    slow = make_trace(1, start_ns=BASE_NS, app_us=30_000)  # started first, completes later
    store.add([fast])
    store.add([slow])
    assert [t.id for t in _traces(store.view())] == [1, 2]
    store.set_sort("time")  # again: newest first
    assert [t.id for t in _traces(store.view())] == [2, 1]


def test_the_filter_applies_before_thinning_so_rare_matches_are_all_listed() -> None:
    store = TraceStore()
    store.set_filter("status:5")
    batch = [make_trace(i, start_ns=BASE_NS + i * 1_000) for i in range(2_000)]
    for i in range(0, 2_000, 400):
        batch[i] = make_trace(i, start_ns=BASE_NS + i * 1_000, status=503)
    store.add(batch)
    store.close_intervals()
    assert [t.id for t in store.view()] == [0, 400, 800, 1200, 1600]
    assert store.matched == 5 and store.total_seen == 2_000


def test_changing_the_filter_relists_the_held_requests() -> None:
    store = _store()
    store.set_filter("slow")
    assert {t.path for t in _traces(store.view())} == {"/slow"}
    store.set_filter("status:5")
    assert [t.id for t in store.view()] == [7]
    store.set_filter("stage:app >10ms")
    assert all(t.path == "/slow" for t in _traces(store.view())) and len(store.view()) == 4
    store.set_filter("<1ms")
    assert all(t.total_ns < 1_000_000 for t in _traces(store.view()))
    assert len(store.view()) == 16
    store.set_filter("")
    assert len(store.view()) == 20 and store.filter_text == ""


def test_listed_is_what_ctrl_s_saves() -> None:
    store = _store()
    assert len(store.listed()) == 20
    store.set_filter("slow")
    assert [t.id for t in store.listed()] == [0, 5, 10, 15]


def test_a_busy_batch_is_held_as_a_sample_and_a_relisting_says_so() -> None:
    store = TraceStore(held_per_second=100)
    store.add([make_trace(i, start_ns=BASE_NS + i * 1_000) for i in range(1_000)])
    assert len(store.held) == 100 and store.held_sampled
    store.set_filter("GET")
    (gap,) = [row for row in store.rows if isinstance(row, Gap)]
    assert gap.sampled and gap.received == 100


def test_bad_filter_is_rejected_and_keeps_the_old_one() -> None:
    store = _store()
    store.set_filter("slow")
    with pytest.raises(FilterError, match="unknown stage"):
        store.set_filter("stage:nope")
    with pytest.raises(FilterError, match="bad duration"):
        store.set_filter(">10parsecs")
    assert store.filter_text == "slow" and len(store.view()) == 4


def test_sort_by_total_then_toggle_direction_and_gaps_only_in_time_order() -> None:
    store = _store()
    store.set_sort("total")
    totals = [t.total_ns for t in _traces(store.view())]
    assert totals == sorted(totals, reverse=True)
    store.set_sort("total")  # same key again: flips
    assert [t.total_ns for t in _traces(store.view())] == sorted(totals)
    thinned = TraceStore()
    thinned.add([make_trace(i, start_ns=BASE_NS + i * 1_000) for i in range(100)])
    thinned.close_intervals()
    assert any(isinstance(row, Gap) for row in thinned.view())
    thinned.set_sort("total")
    assert all(isinstance(row, RequestTrace) for row in thinned.view())


def test_view_is_cached_until_something_changes() -> None:
    store = _store()
    first = store.view()
    assert store.view() is first
    version = store.version
    store.add([make_trace(99)])
    assert store.version != version
    assert store.view() is not first and _traces(store.view())[-1].id == 99


def test_histogram_buckets_hold_their_values_and_tile_the_range() -> None:
    for value in [0, 1, 31, 32, 33, 63, 64, 100, 999, 12_345, 10**9, 2**40]:
        low, high = bucket_bounds(bucket_of(value))
        assert low <= value < high
        assert high - low <= max(1, low / 16)  # at most 1/16 of the value wide
    previous_high = 0
    for index in range(BUCKETS):
        low, high = bucket_bounds(index)
        assert low == previous_high
        previous_high = high


def test_stage_percentiles_are_within_a_bucket_of_the_exact_ones() -> None:
    store = TraceStore.for_recording()
    rng = random.Random(3)
    traces = [make_trace(i, app_us=int(rng.lognormvariate(5, 1.2))) for i in range(5_000)]
    store.add(traces)
    found = store.stage_stats(window=False)
    assert found.requests == found.sampled == 5_000
    apps = sorted(t.stage("app").duration_ns for t in traces)  # type: ignore[union-attr]
    exact_p50, exact_p99 = apps[2_499], apps[4_949]
    app = found.stages["app"]
    assert app.count == 5_000 and app.max_ns == apps[-1]
    assert abs(app.p50_ns - exact_p50) <= exact_p50 / 16
    assert abs(app.p99_ns - exact_p99) <= exact_p99 / 16
    assert [t.id for t in store.slowest(3, window=False)] == [
        t.id for t in sorted(traces, key=lambda t: t.total_ns, reverse=True)[:3]
    ]


def test_live_stage_figures_come_from_a_bounded_sample_but_count_everything() -> None:
    aggregates_store = TraceStore(stage_sample=100)  # traces a second
    source = TraceSource()
    aggregates_store.add(source.batch(5_000, BASE_NS, BASE_NS + INTERVAL_NS))
    found = aggregates_store.stage_stats()
    assert found.requests == 5_000 and found.sampled == 100
    assert found.stages["total"].count == 5_000
    assert found.stages["app"].count == 100


def test_rate_history_counts_per_second() -> None:
    store = TraceStore()
    store.add([make_trace(i, start_ns=1_000_000_000 * (i // 3)) for i in range(9)])
    assert store.rate_history(3) == [3.0, 3.0, 3.0]


def test_unknown_stage_names_get_their_own_row() -> None:
    aggregates = Aggregates(STAGE_NAMES)
    trace = make_trace(1)
    odd = trace._replace(stages=(*trace.stages, trace.stages[0]._replace(name="loop_queue")))

    aggregates.add([odd], [odd.start_ns], [odd.end_ns])
    assert aggregates.stage_stats().stages["loop_queue"].count == 1


def test_synthetic_traces_are_whole_traces() -> None:
    """The synthetic feed builds traces field by field: every field is there (a recording or
    an export of them works as of the correlator's)."""
    for trace in TraceSource().batch(50, BASE_NS, BASE_NS + 10**9):
        assert len(trace) == len(RequestTrace._fields)
        assert RequestTrace.from_json(trace.to_json()) == trace
