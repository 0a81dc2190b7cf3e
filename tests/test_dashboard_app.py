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
from dashboards.synthetic import TraceSource
from dashboards.waterfall import Waterfall

from .dashboard_fixtures import BASE_NS, make_trace

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
    feed = LiveFeed(RunInfo(title="app:app"), quiet_s=0)
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


async def test_following_a_fast_stream_moves_the_detail_at_most_once_a_second() -> None:
    now = [1_000.0]
    feed = LiveFeed(RunInfo(title="app:app"), quiet_s=0)
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
        now[0] += 1.0  # the next tick after the interval shows the newest
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


def _screen_lines(app: ReqtraceApp) -> list[str]:
    """The whole screen as plain text lines (what a terminal would show)."""
    update = app.screen._compositor.render_full_update()
    return ["".join(s.text for strip in line for s in strip) for line in update.strips]


def _busy_feed() -> LiveFeed:
    """Two seconds of 20,000 req/s in 20 ms batches: a thinned list with gap rows."""
    feed = LiveFeed(RunInfo(title="app:app", coverage={"tcp_receive": "tracepoint"}), quiet_s=0)
    source = TraceSource()
    end = BASE_NS
    for _ in range(100):
        feed.put(source.batch(400, end, end + 20_000_000))
        end += 20_000_000
    return feed


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (160, 48)])
async def test_every_layout_fits_list_waterfall_and_lesson(size: tuple[int, int]) -> None:
    app = _app()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        requests = app.query_one(RequestList)
        waterfall = app.query_one(Waterfall)
        assert requests.region.height >= 5 and waterfall.region.height >= 10
        assert not requests.show_horizontal_scrollbar
        for y in range(requests.region.height):  # every line exactly as wide as the list
            assert requests.render_line(y).cell_length == requests.row_width
        lines = _screen_lines(app)
        assert all(len(line) == size[0] for line in lines)
        assert "req/s" not in lines[1] and "30 requests" in lines[1]
        if size == (80, 24):  # compact: a one-line lesson under the waterfall
            summary = app.query_one("#summary", Static)
            assert summary.region.height == 1 and "the ASGI app" in _static_text(summary)
            assert not app.query_one("#explain", Static).display
            await pilot.press("enter")  # drilled in: the whole lesson, the list gives room
            await pilot.pause()
            assert app.query_one("#explain", Static).region.height >= 8
            assert "Look at / tune" in _explain_text(app)
            await pilot.press("escape")
            await pilot.pause()
            assert requests.region.height >= 5
        else:
            assert app.query_one("#explain", Static).region.height >= 8


async def test_a_busy_run_shows_its_rate_filter_and_thinning_in_the_header_at_80x24() -> None:
    app = ReqtraceApp(_busy_feed())
    async with app.run_test(size=(80, 24)) as pilot:
        app.refresh_from_feed()
        await pilot.pause()
        header = _static_text(app.query_one("#header", Static))
        assert "20,000 req/s" in header and "list: slowest+failed+newest" in header
        assert any("more not listed" in line for line in _screen_lines(app))
        await pilot.press("slash", *"status:5", "enter")
        await pilot.pause()
        header = _static_text(app.query_one("#header", Static))
        assert "filter: status:5" in header
        assert {
            row.status for row in app.query_one(RequestList).rows if hasattr(row, "status")
        } == {500}


async def test_the_list_never_holds_more_than_its_bound() -> None:
    feed = _busy_feed()
    feed.store.list_capacity = 50  # type: ignore[union-attr]
    app = ReqtraceApp(feed)
    async with app.run_test(size=SIZE) as pilot:
        source = TraceSource()
        end = BASE_NS + 10**10
        for _ in range(20):
            feed.put(source.batch(2_000, end, end + 125_000_000))
            end += 125_000_000
            app.refresh_from_feed()
            await pilot.pause()
            assert len(app.query_one(RequestList).rows) <= 50


async def test_ctrl_s_under_a_filter_saves_the_filtered_set_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracer.recording.reader import load_recording

    monkeypatch.chdir(tmp_path)
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("slash", *"slow", "enter", "ctrl+s")
        await pilot.pause()
        messages = [n.message for n in app._notifications]
    (saved,) = tmp_path.glob("reqtrace-saved-*.jsonl")
    recording = load_recording(str(saved))
    assert [t.id for t in recording.traces] == [0, 5, 10, 15, 20, 25]
    assert any("6 requests listed (filter: slow)" in m for m in messages)


async def test_sorting_goes_to_the_top_and_time_order_is_start_order() -> None:
    slow_first = make_trace(1, start_ns=BASE_NS, app_us=30_000)  # completes after #2
    fast = make_trace(2, start_ns=BASE_NS + 1_000_000, app_us=10)
    info = RunInfo(title="recording t.jsonl", live=False)
    app = ReqtraceApp(RecordingFeed(info, [*_traces(30)[3:], fast, slow_first], FeedStatus()))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        requests = app.query_one(RequestList)
        starts = [row.start_ns for row in requests.rows]
        assert starts == sorted(starts)
        await pilot.press("k", "k", "k", "k", "2")  # by total: cursor and view at the top
        await pilot.pause()
        assert requests.cursor == 0 and requests.scroll_offset.y == 0
        assert requests.current is slow_first  # the slowest (30 ms) on top
        await pilot.press("1")  # back to time order, oldest first: follow the newest
        await pilot.pause()
        assert requests.cursor == len(requests.rows) - 1 and requests.follow
        await pilot.press("1")  # again: newest first, the top is the newest, followed
        await pilot.pause()
        assert requests.cursor == 0 and requests.follow and requests.newest_first
        assert "time▼" in _static_text(app.query_one("#columns", Static))


async def test_the_screenshot_file_name_is_plain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("s")
        await pilot.pause()
    (shot,) = tmp_path.glob("*.svg")
    assert shot.name.isascii() and " " not in shot.name
    assert shot.name.startswith("reqtrace-screenshot-")


async def test_the_help_explains_every_glyph_the_dashboard_shows() -> None:
    from dashboards.screens import HELP

    seen: set[str] = set()
    for make in (_app, lambda: ReqtraceApp(_busy_feed())):
        for size in [(80, 24), (160, 48)]:
            app = make()
            async with app.run_test(size=size) as pilot:
                app.refresh_from_feed()
                await pilot.pause()
                for keys in ([], ["g", "enter", "k"]):
                    await pilot.press(*keys)
                    await pilot.pause()
                    for line in _screen_lines(app)[:-1]:  # the footer is Textual's
                        seen |= {c for c in line if not c.isascii() and not c.isalnum()}
    # µ is a unit; ▁▕ are Textual's scrollbars and ─ the pane border; the rest are ours.
    unexplained = {c for c in seen - {"µ", "▁", "▕", "─"} if c not in HELP}
    assert not unexplained, f"glyphs on screen the help does not explain: {sorted(unexplained)}"


async def test_h_jumps_from_a_waiting_request_to_the_one_that_held_the_loop() -> None:
    """The lesson of a loop wait names the holder; h moves the list to it (issue 13)."""
    from tracer.model.trace import Blame, Stage

    traces = _traces(10)
    holder = traces[3]._replace(path="/cpu")
    waiter = traces[8]
    wait = Stage("loop_queue", "event loop", waiter.start_ns, waiter.start_ns + 1_000)
    waiter = waiter._replace(
        stages=(wait, *waiter.stages),
        blame=(Blame("loop_queue", holder.id, "GET", "/cpu", 9_800_000),),
    )
    traces[3], traces[8] = holder, waiter
    info = RunInfo(title="recording test.jsonl", live=False)
    app = ReqtraceApp(RecordingFeed(info, traces, FeedStatus()))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        requests = app.query_one(RequestList)
        await pilot.press("G", "k")  # the waiter (id 8): one above the newest
        assert requests.current is not None and requests.current.id == waiter.id
        await pilot.press("enter")
        for _ in range(12):  # up the waterfall to the loop_queue row (the dominant one is lit)
            await pilot.pause()
            if _explain_text(app).startswith("loop_queue"):
                break
            await pilot.press("k")
        text = _explain_text(app).replace("\n", " ")
        assert "GET /cpu (request 3) for 9,800 µs" in text and "Press h" in text
        await pilot.press("h")
        await pilot.pause()
        assert requests.current is not None and requests.current.id == holder.id
