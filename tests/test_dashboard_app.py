"""The dashboard driven with Textual's Pilot: navigation, drill-in, filter, sort, pause, save."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Input, Static

from dashboards.app import ReqtraceApp
from dashboards.feed import FeedStatus, LiveFeed, RecordingFeed, RunInfo
from dashboards.request_list import RequestList
from dashboards.screens import AggregateScreen, HelpScreen
from dashboards.waterfall import Waterfall

from .dashboard_fixtures import make_trace

SIZE = (120, 40)


def _traces(n: int = 30):  # type: ignore[no-untyped-def]
    return [
        make_trace(
            i,
            path="/slow" if i % 5 == 0 else "/fast",
            app_us=20_000 if i % 5 == 0 else 40,
            status=500 if i == 7 else 200,
        )
        for i in range(n)
    ]


def _app(n: int = 30) -> ReqtraceApp:
    info = RunInfo(title="recording test.jsonl", live=False, coverage={"tcp_receive": "tracepoint"})
    return ReqtraceApp(RecordingFeed(info, _traces(n), FeedStatus()))


def _static_text(widget: Static) -> str:
    """What a Static shows, as plain text (its content may be any rich renderable)."""
    console = Console(width=160, color_system=None, file=io.StringIO(), record=True)
    console.print(widget.content)
    return console.export_text()


def _explain_text(app: ReqtraceApp) -> str:
    return _static_text(app.query_one("#explain", Static))


async def test_list_follows_the_newest_and_moves_with_j_k_g_G() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        requests = app.query_one(RequestList)
        assert len(requests.rows) == 30
        assert requests.current is not None and requests.current.id == 29
        await pilot.press("k", "k")
        assert requests.current.id == 27 and not requests.follow
        await pilot.press("g")
        assert requests.current.id == 0
        await pilot.press("j")
        assert requests.current.id == 1
        await pilot.press("G")
        assert requests.current.id == 29 and requests.follow
        # The waterfall shows whatever the cursor is on.
        assert app.query_one(Waterfall).trace.id == 29


async def test_enter_drills_into_stages_and_escape_comes_back() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("g")  # request 0: /slow, dominated by the app stage
        await pilot.pause()
        assert "Your ASGI app handled GET /slow" in _explain_text(app)
        await pilot.press("enter")
        waterfall = app.query_one(Waterfall)
        assert waterfall.has_focus
        await pilot.press("k")  # from app up to parse
        await pilot.pause()
        assert "httptools" in _explain_text(app)
        await pilot.press("escape")
        assert app.query_one(RequestList).has_focus


async def test_filter_narrows_the_list_and_a_bad_filter_is_refused() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("slash")
        box = app.query_one("#filter", Input)
        assert box.has_focus
        await pilot.press(*"slow", "enter")
        await pilot.pause()
        rows = app.query_one(RequestList).rows
        assert len(rows) == 6 and {t.path for t in rows} == {"/slow"}
        await pilot.press("slash", "ctrl+a", *"stage:nope", "enter")
        await pilot.pause()
        assert len(app.query_one(RequestList).rows) == 6  # unchanged
        assert app.store.filter_text == "slow"


async def test_number_keys_sort() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("2")
        totals = [t.total_ns for t in app.query_one(RequestList).rows]
        assert totals == sorted(totals, reverse=True)
        header = _static_text(app.query_one("#columns", Static))
        assert "total▼" in header
        await pilot.press("5")
        statuses = [t.status for t in app.query_one(RequestList).rows]
        assert statuses[0] == 500


async def test_space_pauses_the_list_while_traces_keep_arriving() -> None:
    feed = LiveFeed(RunInfo(title="app:app"))
    feed.put(_traces(5))
    app = ReqtraceApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        app.refresh_from_feed()  # what the 8 Hz timer does; called directly, no sleeps
        await pilot.pause()
        assert len(app.query_one(RequestList).rows) == 5
        await pilot.press("space")
        feed.put([make_trace(100), make_trace(101)])
        app.refresh_from_feed()
        await pilot.pause()
        assert len(app.query_one(RequestList).rows) == 5
        assert "PAUSED (+2 new)" in _static_text(app.query_one("#header", Static))
        assert app.store.total_seen == 7  # nothing is lost while paused
        await pilot.press("space")
        await pilot.pause()
        assert len(app.query_one(RequestList).rows) == 7


async def test_ctrl_s_saves_a_loadable_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracer.recording.reader import load_recording

    monkeypatch.chdir(tmp_path)
    app = _app(12)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
    (saved,) = tmp_path.glob("reqtrace-saved-*.jsonl")
    recording = load_recording(str(saved))
    assert len(recording.traces) == 12 and not recording.problems
    assert recording.traces[3] == _traces(12)[3]


async def test_help_and_aggregate_screens_open_and_close() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("a")
        assert isinstance(app.screen, AggregateScreen)
        stages = _static_text(app.screen.query_one("#stages", Static))
        assert "ASGI app called" in stages and "20.0 ms" in stages
        await pilot.press("escape")
        assert not isinstance(app.screen, AggregateScreen)


async def test_following_a_fast_stream_moves_the_detail_at_most_twice_a_second() -> None:
    now = [1_000.0]
    feed = LiveFeed(RunInfo(title="app:app"))
    feed.put(_traces(3))
    app = ReqtraceApp(feed)
    app.clock = lambda: now[0]
    async with app.run_test(size=SIZE) as pilot:
        app.refresh_from_feed()
        await pilot.pause()
        waterfall = app.query_one(Waterfall)
        assert waterfall.trace is not None and waterfall.trace.id == 2
        now[0] += 0.1  # new rows 100 ms later: the list follows, the detail waits
        feed.put([make_trace(100)])
        app.refresh_from_feed()
        await pilot.pause()
        assert app.query_one(RequestList).current.id == 100  # type: ignore[union-attr]
        assert waterfall.trace.id == 2
        now[0] += 0.5  # the next tick after the interval shows the newest
        app.refresh_from_feed()
        await pilot.pause()
        assert waterfall.trace.id == 100
        now[0] += 0.1
        feed.put([make_trace(101)])
        app.refresh_from_feed()
        await pilot.pause()
        assert waterfall.trace.id == 100
        await pilot.press("k")  # a key press shows its request at once
        assert waterfall.trace.id == 100 and not app.query_one(RequestList).follow
        await pilot.press("G")
        assert waterfall.trace.id == 101


async def test_a_row_left_by_the_cursor_loses_its_highlight_while_the_list_is_unfocused() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        requests = app.query_one(RequestList)

        def background(index: int) -> set[str | None]:
            strip = requests.render_line(index - requests.scroll_offset.y)
            return {
                segment.style.bgcolor.name if segment.style and segment.style.bgcolor else None
                for segment in strip
            }

        await pilot.press("enter")  # drilled in: the waterfall has the focus
        assert not requests.has_focus
        assert background(29) == {"#3a3a3a"}  # the cursor's row, dimmed while unfocused
        requests.cursor = 28  # e.g. following a new row
        await pilot.pause()
        assert background(28) == {"#3a3a3a"}
        assert background(29) == {None}
