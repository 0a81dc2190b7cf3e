"""The reqtrace dashboard: live (`reqtrace run`, `reqtrace demo`) and on recordings (`show`).

Threads collect, the UI renders: the tracer's pipeline thread puts finished traces into a
feed; a timer here (REFRESH_HZ, 2 Hz) drains it inside `batch_update()`, adds the batch to
the store and redraws only what changed. Nothing in the UI waits on the kernel, the server
or the disk.

The cost of a frame follows what is on screen, not the request rate: the store turns a batch
into streaming aggregates and a bounded, thinned list (dashboards/trace_store.py); the list
draws only its visible lines (line API, cached); every pane has a fixed height for a given
terminal size, so updates repaint without a layout pass; the header and column line are
updated only when their text changed; and while the list follows the newest request the
detail pane moves to it at most FOLLOW_DETAIL_HZ times a second (no one reads twenty
waterfalls a second). A key press updates the detail at once.

Layouts: on a short terminal (fewer than COMPACT_BELOW lines, e.g. 80x24) the waterfall lists
only the observed stages and the lesson shrinks to a one-line summary; Enter (drill in)
gives the lesson the list's room, Esc gives it back. Taller terminals show the whole lesson.
"""

from __future__ import annotations

import gc
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
from dashboards.status_header import ListState, header_lines
from dashboards.teaching import explain, gap_explanation, summary
from dashboards.trace_store import FilterError, Gap, Row, TraceStore
from dashboards.waterfall import Waterfall, waterfall_height
from tracer.model.stages import OPTIONAL_STAGES, STAGE_NAMES
from tracer.model.trace import RequestTrace

REFRESH_HZ = 2  # frames a second while requests arrive (htop: 0.7; keys draw at once)
FOLLOW_DETAIL_HZ = 1
COMPACT_BELOW = 34  # terminal lines: fewer, and the compact layout is used
MIN_LIST_ROWS = 5
FREEZE_EVERY_S = 0.5  # see _freeze_long_lived: every tick
COLLECT_EVERY_S = 60.0
REQUIRED_STAGES = [name for name in STAGE_NAMES if name not in OPTIONAL_STAGES]
SORTS = {"1": "time", "2": "total", "3": "dominant", "4": "path", "5": "status"}


class ReqtraceApp(App[None]):
    TITLE = "reqtrace"
    CSS = """
    #header { height: 2; background: $panel; }
    #columns { height: 1; padding: 0 0 0 0; color: $text-muted; }
    RequestList { height: 1fr; min-height: 3; }
    #detail { height: auto; border-top: solid $primary-darken-2; }
    #summary { height: 1; padding: 0 1; display: none; }
    #explain { height: 8; padding: 0 1; color: $text; }
    ReqtraceApp.-compact #detail { border-top: none; }
    ReqtraceApp.-compact #summary { display: block; }
    ReqtraceApp.-compact #explain { display: none; }
    ReqtraceApp.-compact.-drilled RequestList { display: none; }
    ReqtraceApp.-compact.-drilled #columns { display: none; }
    ReqtraceApp.-compact.-drilled #summary { display: none; }
    ReqtraceApp.-compact.-drilled #detail { height: 1fr; }
    ReqtraceApp.-compact.-drilled #explain { display: block; height: 1fr; }
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
        Binding("h", "holder", "loop holder", show=False),
        *(
            Binding(key, f"sort('{name}')", f"sort {name}", show=False)
            for key, name in SORTS.items()
        ),
    ]

    def __init__(self, feed: TraceFeed, store: TraceStore | None = None) -> None:
        super().__init__()
        self.feed = feed
        self.store = store or feed.store or TraceStore.for_recording()
        self.paused = False
        self.pending_while_paused = 0
        self._status = FeedStatus()
        self._shown_trace_id: int | None = None
        self.clock = time.monotonic  # for the detail pane's pace (tests set their own)
        self._detail_shown_at = 0.0  # self.clock() at the last detail change
        self._detail_waiting: Row | None = None  # newest row, held while following
        self._static_text: dict[str, object] = {}
        self._ended_notified = False
        self._shown_version = -1  # the store's version the list shows
        self._seen_at_pause = 0
        self._frozen_at = 0.0
        self._collected_at = self.clock()
        self._stage_name = ""  # the waterfall's highlighted stage

    # -- layout ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield Static(id="columns")
        yield RequestList(clock_offset_ns=self.feed.info.clock_offset_ns, id="requests")
        with Vertical(id="detail"):
            yield Waterfall(id="waterfall")
            yield Static(id="summary")
            yield Static(id="explain")
        yield Input(
            placeholder="filter: text, status:5, stage:app, >10ms … (Enter, Esc)", id="filter"
        )
        yield Footer()

    def on_mount(self) -> None:
        self._freeze_long_lived()
        self.title = f"reqtrace — {self.feed.info.title}"
        self.query_one(RequestList).focus()
        self._apply_layout()
        self.refresh_from_feed()
        self.set_interval(1 / REFRESH_HZ, self.refresh_from_feed)

    def _freeze_long_lived(self) -> None:
        """Move every object alive now out of the garbage collector's full passes.

        Traces are named tuples, which the collector never untracks (it does so for plain
        tuples only): at 20,000 req/s the tens of thousands the store keeps made every full
        pass (about two a second) stall all threads for 50-110 ms, most of the key-to-screen
        latency's tail. What is frozen is still freed by reference counting when the store
        lets go of it; a reference cycle alive at the moment of freezing waits for the
        full pass made once a minute.
        """
        now = self.clock()
        if now - self._collected_at >= COLLECT_EVERY_S:
            # Once a minute, a full pass over everything: a cycle that was alive when frozen
            # is collected then (one pause a minute instead of two a second).
            self._collected_at = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()
        self._frozen_at = now

    def on_resize(self) -> None:
        self._apply_layout()

    def _apply_layout(self) -> None:
        """Compact or roomy for this terminal size; fixed pane heights (no layout per frame)."""
        height = self.size.height
        compact = height < COMPACT_BELOW
        self.set_class(compact, "-compact")
        if compact:
            # Title + as many rows as stages every request has (only observed stages get
            # a row here, and nic_irq/backlog exclude each other), bounded so that the list
            # keeps MIN_LIST_ROWS: header 2, columns 1, summary 1, footer 1. A request with
            # more rows shows those around the highlighted stage.
            room = height - 5 - MIN_LIST_ROWS
            lines = max(3, min(waterfall_height(True, len(REQUIRED_STAGES)), room))
        else:
            lines = waterfall_height(False)
        self.query_one(Waterfall).set_compact(compact, lines)
        self._static_text.pop("#header", None)
        self._static_text.pop("#columns", None)
        self._update_header()
        self._update_columns()
        self._update_lesson()

    # -- the timer: drain the feed, update what changed --------------------------------

    def refresh_from_feed(self) -> None:
        if not self.query(RequestList):  # the timer can fire once more during shutdown
            return
        new = self.feed.take()
        self._status = self.feed.status()
        store = self.store
        with self.batch_update():
            with store.lock:
                if new:
                    store.add(new)
                changed = store.version != self._shown_version
            if self.paused:
                self.pending_while_paused = store.total_seen - self._seen_at_pause
            elif changed:
                self._show_rows()
            self._update_header()
            self._show_waiting_detail()
        if self.feed.info.live and self.clock() - self._frozen_at >= FREEZE_EVERY_S:
            self._freeze_long_lived()
        if self._status.ended and self.feed.info.live and not self._ended_notified:
            self._ended_notified = True
            self.notify(self._status.message or "the run ended", severity="warning")
        if self._status.problems and not self._ended_notified and not self.feed.info.live:
            self._ended_notified = True
            self.notify("\n".join(self._status.problems[:5]), severity="warning", timeout=10)

    def _show_rows(self, top: bool = False) -> None:
        requests = self.query_one(RequestList)
        with self.store.lock:
            self._shown_version = self.store.version
            view = self.store.view()
        requests.set_rows(view, top=top)
        self._update_columns()

    def _update_columns(self) -> None:
        requests = self.query_one(RequestList)
        width = requests.row_width if requests.size.width else self.size.width - 1
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
        store = self.store
        with store.lock:
            # Complete seconds only: the current one is still filling (and would change
            # the header, so repaint it, at every tick).
            newest = store.aggregates.newest_end_ns
            rates = store.rate_history(20, newest - 1_000_000_000) if newest else []
            state = ListState(
                paused=self.paused,
                follow=requests.follow,
                pending=self.pending_while_paused,
                filter_text=store.filter_text,
                matched=store.matched,
                thinning=store.thinning_since(newest),
            )
            total = store.total_seen
        text = header_lines(self.feed.info, self._status, rates, state, total, self.size.width)
        self._update_static("#header", text)

    # -- selection and teaching ----------------------------------------------------------

    @on(RequestList.Highlighted)
    def _highlighted(self, event: RequestList.Highlighted) -> None:
        if not event.by_new_rows:
            self._update_header()  # "following" may have changed with the key
        row = event.row
        if row is not None and row.id == self._shown_trace_id:
            return
        if event.by_new_rows and self.clock() - self._detail_shown_at < 1 / FOLLOW_DETAIL_HZ:
            self._detail_waiting = row  # shown by the timer, once the interval has passed
            return
        # A key moved the cursor: its line is repainted first (a frame of two list lines),
        # the detail, which costs more to draw, right after.
        self._detail_waiting = row
        self.call_after_refresh(self._show_key_detail, row)

    def _show_key_detail(self, row: Row | None) -> None:
        if self._detail_waiting is row and self.query_one(RequestList).current is row:
            self._show_detail(row)

    def _show_waiting_detail(self) -> None:
        waiting = self._detail_waiting
        if waiting is not None and self.clock() - self._detail_shown_at >= 1 / FOLLOW_DETAIL_HZ:
            if self.query_one(RequestList).current is waiting:  # still where the cursor is
                self._show_detail(waiting)
            else:
                self._detail_waiting = None

    def _show_detail(self, row: Row | None) -> None:
        self._detail_waiting = None
        self._detail_shown_at = self.clock()
        self._shown_trace_id = row.id if row is not None else None
        waterfall = self.query_one(Waterfall)
        if isinstance(row, Gap):
            with self.store.lock:
                newest = self.store.aggregates.newest_end_ns
                rates = self.store.rate_history(1, newest - 1_000_000_000)
            waterfall.gap_text = gap_explanation(
                row.hidden, row.received, row.interval_ns / 1e6, rates[0] if rates else 0.0
            )
            waterfall.trace = None
            waterfall.refresh()
            self._update_lesson()
        else:
            waterfall.gap_text = None
            waterfall.trace = row

    @on(RequestList.Selected)
    def _selected(self, event: RequestList.Selected) -> None:
        if isinstance(event.row, RequestTrace):
            self.add_class("-drilled")
            self.query_one(Waterfall).focus()

    @on(Waterfall.StageHighlighted)
    def _stage(self, event: Waterfall.StageHighlighted) -> None:
        self._stage_name = event.stage_name
        self._update_lesson()

    def _update_lesson(self) -> None:
        """The lesson of the highlighted stage: a one-line summary and the full text."""
        trace = self.query_one(Waterfall).trace
        if trace is None or not self._stage_name:
            short: object = ""
            full: object = ""
        else:
            short = summary(trace, self._stage_name)
            full = explain(trace, self._stage_name)
        self._update_static("#summary", short)
        self._update_static("#explain", full)

    # -- actions -----------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_aggregate(self) -> None:
        self.push_screen(AggregateScreen(self.store, window=self.feed.info.live))

    def action_pause(self) -> None:
        self.paused = not self.paused
        with self.store.lock:
            self._seen_at_pause = self.store.total_seen
        if not self.paused:
            self.pending_while_paused = 0
            self._show_rows()
        self._update_header()

    def action_follow(self) -> None:
        requests = self.query_one(RequestList)
        requests.follow = not requests.follow
        if requests.follow:
            requests.action_newest()
        self._update_header()

    def action_sort(self, key: str) -> None:
        """Sort the list by `key` (again: reverse) and go to its top; back in time order,
        oldest first, go to the newest request and follow (the live list's usual view)."""
        with self.store.lock:
            self.store.set_sort(key)
            time_order, reverse = self.store.sort_key == "time", self.store.reverse
        requests = self.query_one(RequestList)
        requests.newest_first = time_order and reverse
        requests.follow = time_order  # newest first: the top; oldest first: the bottom
        self._show_rows(top=not (time_order and not reverse))
        self._show_detail(requests.current)
        self._update_header()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = self.store.filter_text
        box.add_class("visible")
        box.focus()

    @on(Input.Submitted, "#filter")
    def _apply_filter(self, event: Input.Submitted) -> None:
        try:
            with self.store.lock:
                self.store.set_filter(event.value)
        except FilterError as exc:
            self.notify(str(exc), severity="error")
            return
        event.input.remove_class("visible")
        requests = self.query_one(RequestList)
        requests.focus()
        self._show_rows()
        self._show_detail(requests.current)  # the list changed by a key: show it at once
        self._update_header()

    def action_back(self) -> None:  # type: ignore[override]  # ours is not a coroutine
        box = self.query_one("#filter", Input)
        if box.has_class("visible"):
            box.remove_class("visible")
        self.remove_class("-drilled")
        self.query_one(RequestList).focus()

    def action_save(self) -> None:
        """Save what the list shows (what passed the filter), and say what that is."""
        store = self.store
        with store.lock:
            traces = store.listed()
            left_out = store.not_listed
            filter_text = store.filter_text
        path = save_traces(traces, self.feed.info.header, Path.cwd())
        what = f"the {len(traces):,} requests listed"
        if filter_text:
            what += f" (filter: {filter_text})"
        if left_out:
            what += f"; {left_out:,} more passed but were not listed"
        self.notify(f"saved {what} to {path}", timeout=8)

    def action_holder(self) -> None:
        """Jump to the request that held the event loop longest while the shown request
        waited for it (its loop_busy, loop_queue or handoff stage; the lesson names it)."""
        trace = self.query_one(Waterfall).trace
        if trace is None:
            return
        stage = self._stage_name if trace.blame_of(self._stage_name) else ""
        entries = [b for b in (trace.blame_of(stage) if stage else trace.blame) if b.holder]
        if not entries:
            self.notify("no traced request held the event loop while this one waited")
            return
        holder_id = max(entries, key=lambda entry: entry.ns).holder
        requests = self.query_one(RequestList)
        for index, row in enumerate(requests.rows):
            if isinstance(row, RequestTrace) and row.id == holder_id:
                self.remove_class("-drilled")
                requests.focus()
                requests._move_to(index)
                return
        self.notify(f"request {holder_id} is no longer listed (filtered out or scrolled away)")

    def action_screenshot_svg(self) -> None:
        name = time.strftime("reqtrace-screenshot-%Y%m%d-%H%M%S.svg")
        path = self.save_screenshot(filename=name, path=str(Path.cwd()))
        self.notify(f"screenshot saved to {path}")

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Filter requests", "Filter the list (/)", self.action_filter)
        yield SystemCommand("Pause or resume", "Freeze the list (space)", self.action_pause)
        yield SystemCommand("Follow newest", "Toggle following (f)", self.action_follow)
        yield SystemCommand("Aggregate view", "Per-stage percentiles (a)", self.action_aggregate)
        yield SystemCommand(
            "Save recording",
            "Write the requests listed, as filtered (ctrl+s)",
            self.action_save,
        )
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
