"""Snapshots of the dashboard at fixed terminal sizes, from fixed traces.

Regenerate after an intended visual change with:
    .venv/bin/python -m pytest tests/test_dashboard_snapshots.py --snapshot-update
and look at the new SVGs under tests/__snapshots__/ before committing them.

Sizes: 80x24 (the compact layout: list, the observed stages, a one-line lesson), 120x40 and
160x48 (the whole lesson); each must fit without a horizontal scrollbar or spilled cells.
"""

from __future__ import annotations

import pytest

from dashboards.app import ReqtraceApp
from dashboards.feed import FeedStatus, LiveFeed, RecordingFeed, RunInfo
from dashboards.synthetic import BASE_NS, TraceSource

from .dashboard_fixtures import make_trace

SIZE = (120, 36)
SIZES = [(80, 24), (120, 40), (160, 48)]
COVERAGE = {
    "nic_irq": "tracepoint",
    "tcp_receive": "tracepoint",
    "socket_recv": "tracepoint",
    "socket_send": "tracepoint",
    "epoll_wait": "tracepoint",
}


def _app() -> ReqtraceApp:
    traces = [
        make_trace(
            i,
            path="/slow" if i % 4 == 0 else "/api/items",
            app_us=20_000 if i % 4 == 0 else 60,
            status=500 if i == 5 else 200,
            complete=i != 9,
        )
        for i in range(24)
    ]
    info = RunInfo(
        title="recording snapshot.jsonl",
        address="http://127.0.0.1:8000",
        server_pid=4242,
        runs_as="alice",
        coverage=COVERAGE,
        live=False,
    )
    return ReqtraceApp(RecordingFeed(info, traces, FeedStatus(lost_records=0)))


def _busy_app() -> ReqtraceApp:
    """A live run at 20,000 req/s for two seconds: the list thinned, with gaps."""
    info = RunInfo(
        title="tracer.demo.app:app",
        address="http://127.0.0.1:8000",
        server_pid=4242,
        runs_as="alice",
        coverage=COVERAGE,
    )
    feed = LiveFeed(info, quiet_s=0)
    source = TraceSource()
    end = BASE_NS
    for _ in range(100):  # 20 ms batches, as the pipeline emits them
        feed.put(source.batch(400, end, end + 20_000_000))
        end += 20_000_000
    return ReqtraceApp(feed)


def test_main_view(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app(), terminal_size=SIZE, press=["k", "k", "k"])


def test_drilled_into_a_stage(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app(), terminal_size=SIZE, press=["g", "enter", "k", "k", "k"])


def test_aggregate_view(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app(), terminal_size=SIZE, press=["a"])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_layout_fits(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app(), terminal_size=size, press=["k", "k", "k"])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_busy_and_filtered(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """Thinned list with gap rows, the thinning and filter indicators in the header."""
    app = _busy_app()

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        app.refresh_from_feed()
        await pilot.pause()

    assert snap_compare(
        app, terminal_size=size, run_before=run_before, press=["slash", *"json", "enter"]
    )


def test_compact_drilled_in_shows_the_whole_lesson(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app(), terminal_size=(80, 24), press=["g", "enter"])
