"""The dashboard's trace store: bounded, filtered, sorted, aggregated."""

from __future__ import annotations

import pytest

from dashboards.trace_store import FilterError, TraceStore

from .dashboard_fixtures import make_trace


def _store(n: int = 20) -> TraceStore:
    store = TraceStore(capacity=100)
    store.add(
        make_trace(
            i,
            path="/slow" if i % 5 == 0 else "/fast",
            app_us=20_000 if i % 5 == 0 else 40,
            status=500 if i == 7 else 200,
        )
        for i in range(n)
    )
    return store


def test_capacity_bounds_memory_and_counts_evictions() -> None:
    store = TraceStore(capacity=10)
    store.add(make_trace(i) for i in range(25))
    assert len(store.traces) == 10 and store.evicted == 15 and store.total_seen == 25
    assert [t.id for t in store.view()] == list(range(15, 25))


def test_filter_by_text_status_stage_and_duration() -> None:
    store = _store()
    store.set_filter("slow")
    assert {t.path for t in store.view()} == {"/slow"}
    store.set_filter("status:5")
    assert [t.id for t in store.view()] == [7]
    store.set_filter("stage:app >10ms")
    assert all(t.path == "/slow" for t in store.view()) and len(store.view()) == 4
    store.set_filter("<1ms")
    assert all(t.total_ns < 1_000_000 for t in store.view()) and len(store.view()) == 16
    store.set_filter("")
    assert len(store.view()) == 20


def test_bad_filter_is_rejected_and_keeps_the_old_one() -> None:
    store = _store()
    store.set_filter("slow")
    with pytest.raises(FilterError, match="unknown stage"):
        store.set_filter("stage:nope")
    with pytest.raises(FilterError, match="bad duration"):
        store.set_filter(">10parsecs")
    assert store.filter_text == "slow" and len(store.view()) == 4


def test_sort_by_total_then_toggle_direction() -> None:
    store = _store()
    store.set_sort("total")
    totals = [t.total_ns for t in store.view()]
    assert totals == sorted(totals, reverse=True)
    store.set_sort("total")  # same key again: flips
    assert [t.total_ns for t in store.view()] == sorted(totals)


def test_view_is_cached_until_something_changes() -> None:
    store = _store()
    first = store.view()
    assert store.view() is first
    store.add([make_trace(99)])
    assert store.view() is not first and store.view()[-1].id == 99


def test_stage_stats_and_slowest() -> None:
    store = _store()
    stats = store.stage_stats()
    assert stats["app"].count == 20
    assert stats["app"].max_ns == 20_000_000
    assert stats["app"].p50_ns == 40_000
    assert stats["total"].count == 20
    assert [t.path for t in store.slowest(4)] == ["/slow"] * 4


def test_rate_history_counts_per_second() -> None:
    store = TraceStore()
    store.add(make_trace(i, start_ns=1_000_000_000 * (i // 3)) for i in range(9))
    assert store.rate_history(3) == [3.0, 3.0, 3.0]
