"""The reqtrace dashboard: live (`reqtrace run`, `reqtrace demo`) and on recordings (`show`).

Threads collect, the UI renders: the tracer's pipeline thread puts finished traces into a
feed; a timer here (8 Hz) drains it inside `batch_update()`, adds the batch to the store and
redraws only what changed. Nothing in the UI waits on the kernel, the server or the disk.

What a redraw costs is Textual rendering widgets, so: the fixed-height header and column
line are updated only when their text changed, and without a layout pass; and while the
list follows the newest request at a high rate, the detail pane (waterfall and lesson,
whose heights change with the trace) moves to the newest request at most
FOLLOW_DETAIL_HZ times a second - no one reads twenty waterfalls a second, and each one
re-lays out the screen. A key press updates the detail at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from dashboards.feed import FeedStatus, TraceFeed
from dashboards.request_list import RequestList, column_header
from dashboards.screens import AggregateScreen, HelpScreen
from dashboards.status_header import header_lines
from dashboards.teaching import explain
from dashboards.trace_store import FilterError, TraceStore
from dashboards.waterfall import Waterfall
from tracer.model.trace import RequestTrace

REFRESH_HZ = 8
FOLLOW_DETAIL_HZ = 2
SORTS = {"1": "time", "2": "total", "3": "dominant", "4": "path", "5": "status"}


class ReqtraceApp(App[None]):
    TITLE = "reqtrace"
    CSS = """
    #header { height: 2; background: $panel; }
    #columns { height: 1; padding: 0 0 0 0; color: $text-muted; }
    RequestList { height: 1fr; min-height: 4; }
    #detail { height: auto; max-height: 24; border-top: solid $primary-darken-2; }
    #explain { height: auto; max-height: 8; padding: 0 1; color: $text; }
    #filter { dock: bottom; display: none; }
    #filter.visible { display: block; }
    """

    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
        Binding("question_mark", "help", "help"),
        Binding("slash", "filter", "filter"),
        Binding("space", "pause", "pause"),
        Binding("f", "follow", "follow", show=False),
        Binding("a", "aggregate", "aggregate"),
        Binding("escape", "back", "back", show=False),
        Binding("ctrl+s", "save", "save"),
        Binding("s", "screenshot_svg", "screenshot", show=False),
        *(
            Binding(key, f"sort('{name}')", f"sort {name}", show=False)
            for key, name in SORTS.items()
        ),
    ]

    def __init__(self, feed: TraceFeed, store: TraceStore | None = None) -> None:
        super().__init__()
        self.feed = feed
        self.store = store or TraceStore()
        self.paused = False
        self.pending_while_paused = 0
        self._status = FeedStatus()
        self._shown_trace_id: int | None = None
        self.clock = time.monotonic  # for the detail pane's pace (tests set their own)
        self._detail_shown_at = 0.0  # self.clock() at the last detail change
        self._detail_waiting: RequestTrace | None = None  # newest trace, held while following
        self._static_text: dict[str, object] = {}
        self._ended_notified = False

    # -- layout ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield Static(id="columns")
        yield RequestList(clock_offset_ns=self.feed.info.clock_offset_ns, id="requests")
        with Vertical(id="detail"):
            yield Waterfall(id="waterfall")
            yield Static(id="explain")
        yield Input(
            placeholder="filter: text, status:5, stage:app, >10ms … (Enter, Esc)", id="filter"
        )
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"reqtrace — {self.feed.info.title}"
        self.query_one(RequestList).focus()
        self.refresh_from_feed()
        self.set_interval(1 / REFRESH_HZ, self.refresh_from_feed)

    # -- the timer: drain the feed, update what changed --------------------------------

    def refresh_from_feed(self) -> None:
        if not self.query(RequestList):  # the timer can fire once more during shutdown
            return
        new = self.feed.take()
        self._status = self.feed.status()
        with self.batch_update():
            if new:
                self.store.add(new)
                if self.paused:
                    self.pending_while_paused += len(new)
                else:
                    self._show_rows()
            self._update_header()
            self._show_waiting_detail()
        if self._status.ended and self.feed.info.live and not self._ended_notified:
            self._ended_notified = True
            self.notify(self._status.message or "the run ended", severity="warning")
        if self._status.problems and not self._ended_notified and not self.feed.info.live:
            self._ended_notified = True
            self.notify("\n".join(self._status.problems[:5]), severity="warning", timeout=10)

    def _show_rows(self) -> None:
        requests = self.query_one(RequestList)
        requests.set_rows(self.store.view())
        self._update_columns()

    def _update_columns(self) -> None:
        width = self.query_one(RequestList).size.width or self.size.width
        self._update_static(
            "#columns", column_header(width, self.store.sort_key, self.store.reverse)
        )

    def _update_static(self, selector: str, text: object) -> None:
        """Update a fixed-height Static only when its text changed (no layout pass)."""
        if self._static_text.get(selector) != text:
            self._static_text[selector] = text
            self.query_one(selector, Static).update(text, layout=False)  # type: ignore[arg-type]

    def _update_header(self) -> None:
        requests = self.query_one(RequestList)
        rates = self.store.rate_history(20)
        text = header_lines(
            self.feed.info,
            self._status,
            rates,
            self.paused,
            requests.follow,
            self.pending_while_paused,
            self.store.total_seen,
        )
        self._update_static("#header", text)

    # -- selection and teaching ----------------------------------------------------------

    @on(RequestList.Highlighted)
    def _highlighted(self, event: RequestList.Highlighted) -> None:
        trace = event.trace
        if trace is not None and trace.id == self._shown_trace_id:
            return
        if event.by_new_rows and self.clock() - self._detail_shown_at < 1 / FOLLOW_DETAIL_HZ:
            self._detail_waiting = trace  # shown by the timer, once the interval has passed
            return
        self._show_detail(trace)

    def _show_waiting_detail(self) -> None:
        waiting = self._detail_waiting
        if waiting is not None and self.clock() - self._detail_shown_at >= 1 / FOLLOW_DETAIL_HZ:
            if self.query_one(RequestList).current is waiting:  # still where the cursor is
                self._show_detail(waiting)
            else:
                self._detail_waiting = None

    def _show_detail(self, trace: RequestTrace | None) -> None:
        self._detail_waiting = None
        self._detail_shown_at = self.clock()
        self._shown_trace_id = trace.id if trace else None
        self.query_one(Waterfall).trace = trace

    @on(RequestList.Selected)
    def _selected(self, _event: RequestList.Selected) -> None:
        self.query_one(Waterfall).focus()

    @on(Waterfall.StageHighlighted)
    def _stage(self, event: Waterfall.StageHighlighted) -> None:
        trace = self.query_one(Waterfall).trace
        panel = self.query_one("#explain", Static)
        panel.update(explain(trace, event.stage_name) if trace else "")

    # -- actions -----------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_aggregate(self) -> None:
        self.push_screen(AggregateScreen(self.store))

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self.pending_while_paused = 0
            self._show_rows()
        self._update_header()

    def action_follow(self) -> None:
        requests = self.query_one(RequestList)
        requests.follow = not requests.follow
        if requests.follow:
            requests.action_last()
        self._update_header()

    def action_sort(self, key: str) -> None:
        self.store.set_sort(key)
        self.query_one(RequestList).follow = key == "time" and not self.store.reverse
        self._show_rows()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = self.store.filter_text
        box.add_class("visible")
        box.focus()

    @on(Input.Submitted, "#filter")
    def _apply_filter(self, event: Input.Submitted) -> None:
        try:
            self.store.set_filter(event.value)
        except FilterError as exc:
            self.notify(str(exc), severity="error")
            return
        event.input.remove_class("visible")
        self.query_one(RequestList).focus()
        self._show_rows()

    def action_back(self) -> None:  # type: ignore[override]  # ours is not a coroutine
        box = self.query_one("#filter", Input)
        if box.has_class("visible"):
            box.remove_class("visible")
        self.query_one(RequestList).focus()

    def action_save(self) -> None:
        path = save_traces(self.store.traces, self.feed.info.header, Path.cwd())
        self.notify(f"saved {len(self.store.traces):,} requests to {path}")

    def action_screenshot_svg(self) -> None:
        path = self.save_screenshot(path=str(Path.cwd()))
        self.notify(f"screenshot saved to {path}")

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Filter requests", "Filter the list (/)", self.action_filter)
        yield SystemCommand("Pause or resume", "Freeze the list (space)", self.action_pause)
        yield SystemCommand("Follow newest", "Toggle following (f)", self.action_follow)
        yield SystemCommand("Aggregate view", "Per-stage percentiles (a)", self.action_aggregate)
        yield SystemCommand("Save recording", "Write held requests (ctrl+s)", self.action_save)
        yield SystemCommand("Screenshot", "Save an SVG screenshot (s)", self.action_screenshot_svg)
        for key, name in SORTS.items():
            yield SystemCommand(
                f"Sort by {name}",
                f"Sort the list by {name} ({key})",
                lambda n=name: self.action_sort(n),
            )


def save_traces(traces: Iterable[RequestTrace], header: dict[str, object], folder: Path) -> Path:
    """Write traces as a recording (header, one line each, footer) next to the user."""
    from tracer.recording.writer import Recorder

    path = folder / time.strftime("reqtrace-saved-%Y%m%d-%H%M%S.jsonl")
    recorder = Recorder(str(path), header={**header, "saved_from": "dashboard"})
    try:
        for trace in traces:
            recorder.write(trace)
    finally:
        recorder.close(lost_records={}, extra={})
    return path
