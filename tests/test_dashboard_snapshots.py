"""Snapshots of the dashboard at a fixed terminal size, from a fixed recording.

Regenerate after an intended visual change with:
    .venv/bin/python -m pytest tests/test_dashboard_snapshots.py --snapshot-update
and look at the new SVGs under tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

from dashboards.app import ReqtraceApp
from dashboards.feed import FeedStatus, RecordingFeed, RunInfo

from .dashboard_fixtures import make_trace

SIZE = (120, 36)


def _app() -> ReqtraceApp:
    traces = [
        make_trace(
            i,
            path="/slow" if i % 4 == 0 else "/api/items",
            app_us=20_000 if i % 4 == 0 else 60,
            status=500 if i == 5 else 200,
        )
        for i in range(24)
    ]
    info = RunInfo(
        title="recording snapshot.jsonl",
        address="http://127.0.0.1:8000",
        server_pid=4242,
        runs_as="alice",
        coverage={
            "nic_irq": "tracepoint",
            "tcp_receive": "tracepoint",
            "socket_recv": "tracepoint",
            "socket_send": "tracepoint",
            "epoll_wait": "tracepoint",
        },
        live=False,
    )
    return ReqtraceApp(RecordingFeed(info, traces, FeedStatus(lost_records=0)))


def test_main_view(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app(), terminal_size=SIZE, press=["k", "k", "k"])


def test_drilled_into_a_stage(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app(), terminal_size=SIZE, press=["g", "enter", "k", "k", "k"])


def test_aggregate_view(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(_app(), terminal_size=SIZE, press=["a"])
