"""The request list: one line per row, drawn with the line API (no widget per row).

Rows come from the TraceStore's view: requests, and `Gap` rows that stand for requests the
list does not show (more arrived in an interval than anyone can read). Each visible line is
rendered on demand by `render_line` from a cache keyed by (row id, width, look), so a frame
costs the lines on screen, whatever the number of rows or the request rate. Follow mode keeps
the cursor on the newest request (the last row, or the first when newest come first) until
the user moves away; moving back there turns it on again. When rows arrive or old ones
leave the bounded list, the row under the cursor stays where it is on screen.

Every row is exactly as wide as the list (columns shrink on narrow terminals), so nothing
spills and no horizontal scrollbar appears.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from dashboards.render import layer_color, mini_waterfall_cells
from dashboards.trace_store import Gap, Row
from tracer.model.trace import RequestTrace
from tracer.model.units import format_duration

INCOMPLETE = "⚠"
GAP_MARK = "⋯"
CURSOR_BG = "#264f78"
CURSOR_UNFOCUSED_BG = "#3a3a3a"


@dataclass(frozen=True)
class Columns:
    """Column widths for a list `width` cells wide; they add up to exactly `width`."""

    width: int
    time: int = 12
    method: int = 7
    status: int = 3
    total: int = 9
    dominant: int = 10
    waterfall: int = 16

    @classmethod
    def fit(cls, width: int) -> Columns:
        if width >= 110:
            return cls(width)
        if width >= 90:
            return cls(width, method=6, dominant=10, waterfall=12)
        return cls(width, method=4, total=8, dominant=8, waterfall=10)

    @property
    def path(self) -> int:
        # Separating spaces: after time, method, path, status, total, dominant; then the
        # waterfall and one cell for the incomplete mark.
        fixed = self.time + self.method + self.status + self.total + self.dominant
        return max(4, self.width - fixed - self.waterfall - 6 - 1)


def _cut(text: str, size: int) -> str:
    return text if len(text) <= size else text[: max(0, size - 1)] + "…"


def column_header(width: int, sort_key: str, reverse: bool) -> Text:
    """The titles above the list, with the sort column marked."""
    cols = Columns.fit(width)
    arrow = "▼" if reverse else "▲"

    def title(label: str, key: str, size: int, right: bool = False) -> str:
        label = f"{label}{arrow}" if key == sort_key else label
        label = label[:size]
        return label.rjust(size) if right else label.ljust(size)

    line = " ".join(
        [
            title("time", "time", cols.time),
            title("method", "", cols.method),
            title("path", "path", cols.path),
            title("st", "status", cols.status),
            title("total", "total", cols.total, right=True),
            title("dominant", "dominant", cols.dominant),
            title("waterfall", "", cols.waterfall),
        ]
    )
    return Text(line[:width].ljust(width), style="bold", no_wrap=True, overflow="crop")


def clock_text(start_ns: int, clock_offset_ns: int | None) -> str:
    """A start time as HH:MM:SS.mmm (wall clock), or +seconds on the monotonic clock."""
    if clock_offset_ns is None:
        return f"+{start_ns / 1e9:,.3f}"[-12:]
    seconds = (start_ns + clock_offset_ns) / 1e9
    millis = int(seconds % 1 * 1000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"


_STYLES: dict[tuple[str, int], Style] = {}
LOOK_BACKGROUNDS = {0: None, 1: CURSOR_UNFOCUSED_BG, 2: CURSOR_BG}


def _style(spec: str, look: int) -> Style:
    """A parsed style for a look (0 plain, 1 cursor unfocused, 2 cursor), parsed once."""
    style = _STYLES.get((spec, look))
    if style is None:
        style = Style.parse(spec) if spec else Style()
        background = LOOK_BACKGROUNDS[look]
        if background:
            style += Style(bgcolor=background)
        _STYLES[spec, look] = style
    return style


def _fit_cells(text: str, size: int, right: bool = False) -> str:
    """`text` cut (with …) or padded to exactly `size` cells (wide characters counted)."""
    if text.isascii():
        text = _cut(text, size)
        return text.rjust(size) if right else text.ljust(size)
    if cell_len(text) > size:
        text = set_cell_size(text, max(0, size - 1)) + "…"
    return set_cell_size(text, size) if not right else " " * (size - cell_len(text)) + text


def row_segments(
    trace: RequestTrace, width: int, clock_offset_ns: int | None, look: int = 0
) -> list[Segment]:
    """One request as a list line: segments exactly `width` cells wide.

    Built as segments with styles parsed once (not through rich Text): this is what a
    frame costs when the list follows a busy server, once per new visible row.
    """
    cols = Columns.fit(width)
    dominant = trace.dominant_stage()
    status = trace.status
    status_color = (
        "red" if status >= 500 or not status else ("yellow" if status >= 400 else "green")
    )
    when = clock_text(trace.start_ns, clock_offset_ns)[: cols.time].ljust(cols.time)
    segments = [
        Segment(when + " ", _style("grey62", look)),
        Segment(trace.method[: cols.method].ljust(cols.method) + " ", _style("bold", look)),
        Segment(_fit_cells(trace.path, cols.path) + " ", _style("", look)),
        Segment(
            str(status or "—")[: cols.status].rjust(cols.status) + " ", _style(status_color, look)
        ),
        Segment(
            format_duration(trace.total_ns)[: cols.total].rjust(cols.total) + " ", _style("", look)
        ),
    ]
    if dominant:
        name = dominant.name[: cols.dominant].ljust(cols.dominant) + " "
        segments.append(Segment(name, _style(layer_color(dominant.layer), look)))
    else:
        segments.append(Segment("—".ljust(cols.dominant) + " ", _style("grey50", look)))
    run, run_color = "", ""
    for glyph, color in mini_waterfall_cells(
        trace.stages, trace.start_ns, trace.end_ns, cols.waterfall
    ):
        if color == run_color:
            run += glyph
        else:
            if run:
                segments.append(Segment(run, _style(run_color, look)))
            run, run_color = glyph, color
    if run:
        segments.append(Segment(run, _style(run_color, look)))
    segments.append(Segment(INCOMPLETE if not trace.complete else " ", _style("yellow", look)))
    return segments


def row_text(trace: RequestTrace, width: int, clock_offset_ns: int | None) -> Text:
    """The same line as rich Text (for tests and anything printing to a console)."""
    text = Text(no_wrap=True, overflow="crop", end="")
    for segment in row_segments(trace, width, clock_offset_ns):
        text.append(segment.text, segment.style)
    return text


def gap_text(gap: Gap, width: int, clock_offset_ns: int | None) -> Text:
    """The line standing for requests the list leaves out."""
    cols = Columns.fit(width)
    when = clock_text(gap.last_start_ns, clock_offset_ns)[: cols.time].ljust(cols.time)
    of = f"of {gap.received:,}" + (" sampled" if gap.sampled else "")
    words = (
        f"{GAP_MARK} {gap.hidden:,} more not listed ({of} in {gap.interval_ns / 1e6:.0f} ms: "
        "the slowest, failed and newest are)"
    )
    text = Text(no_wrap=True, overflow="crop", end="")
    text.append(when + " ", "grey42")
    text.append(_cut(words, width - cols.time - 1).ljust(width - cols.time - 1), "italic grey58")
    return text


class RequestList(ScrollView, can_focus=True):
    """Scrollable list of requests with a cursor."""

    BINDINGS = [
        Binding("j,down", "cursor(1)", "down", show=False),
        Binding("k,up", "cursor(-1)", "up", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("g,home", "first", "first", show=False),
        Binding("G,end", "last", "last", show=False),
        Binding("enter", "select", "drill in"),
    ]

    DEFAULT_CSS = """
    RequestList { height: 1fr; overflow-x: hidden; scrollbar-size-vertical: 1; }
    """

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)
    follow: reactive[bool] = reactive(True)

    class Highlighted(Message):
        def __init__(self, row: Row | None, by_new_rows: bool = False) -> None:
            super().__init__()
            self.row = row
            self.by_new_rows = by_new_rows  # the cursor followed new rows (not a key press)

        @property
        def trace(self) -> RequestTrace | None:
            return self.row if isinstance(self.row, RequestTrace) else None

    class Selected(Message):
        def __init__(self, row: Row) -> None:
            super().__init__()
            self.row = row

    def __init__(self, clock_offset_ns: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.rows: Sequence[Row] = ()
        self.clock_offset_ns = clock_offset_ns
        self.newest_first = False  # where following keeps the cursor: last row, or first
        self._cache: dict[tuple[int, int, int], Strip] = {}
        self._highlighted: Row | None = None
        self._setting_rows = False

    # -- data --------------------------------------------------------------------------

    @property
    def row_width(self) -> int:
        return self.scrollable_content_region.width or self.size.width

    def set_rows(self, rows: Sequence[Row], top: bool = False) -> None:
        """Show `rows`: following, on the newest; `top`, on the first; else on the same row.

        A row that stays keeps its place on screen (the scroll offset moves with it).
        """
        current, old_index = self.current, self.cursor
        old_top, old_rows = self.scroll_offset.y, self.rows
        self.rows = rows
        self._setting_rows = True
        self._set_virtual_height(len(rows))
        if len(self._cache) > 2048:
            self._cache.clear()
        last = max(0, len(rows) - 1)
        if top:
            self.scroll_to(y=0, animate=False, immediate=True)
            self.cursor = 0
        elif self.follow or current is None:
            self.cursor = 0 if self.newest_first else last
        else:
            index = self._index_of(current, old_index)
            if index is None:  # it left the list (the oldest go first)
                index = 0
            shift = index - old_index
            if shift:
                self.scroll_to(y=max(0, old_top + shift), animate=False, immediate=True)
            self.cursor = min(index, last)
        self._setting_rows = False
        if self._same_lines_shown(old_rows, old_top):
            return  # rows came or went out of view: the scrollbar is all that changed
        self.refresh()

    def _same_lines_shown(self, old_rows: Sequence[Row], old_top: int) -> bool:
        """Whether the lines on screen show the same rows as before (nothing to repaint)."""
        top, height = self.scroll_offset.y, self.scrollable_content_region.height
        if not height:
            return False
        before = old_rows[old_top : old_top + height]
        after = self.rows[top : top + height]
        return len(before) == len(after) and all(a is b for a, b in zip(before, after, strict=True))

    def _set_virtual_height(self, height: int) -> None:
        """The scrollable height; without a layout pass while the scrollbar stays shown.

        Setting `virtual_size` re-lays out the screen (the scrollbar may appear or go): at 8
        new batches a second that would be most of the dashboard's cost.
        """
        size = Size(0, height)
        if size == self.virtual_size:
            return
        viewport = self.scrollable_content_region.height
        if self.show_vertical_scrollbar and min(height, self.virtual_size.height) > viewport:
            self.set_reactive(ScrollView.virtual_size, size)
            self._scroll_update(size)
        else:
            self.virtual_size = size

    def _index_of(self, row: Row, near: int) -> int | None:
        rows = self.rows
        if near < len(rows) and rows[near] is row:
            return near
        for index, candidate in enumerate(rows):
            if candidate is row:
                return index
        return None

    @property
    def current(self) -> Row | None:
        if 0 <= self.cursor < len(self.rows):
            return self.rows[self.cursor]
        return None

    # -- cursor ------------------------------------------------------------------------

    def watch_cursor(self, old: int, cursor: int) -> None:
        height = max(1, self.scrollable_content_region.height)
        top = self.scroll_offset.y
        if cursor < top:
            self.scroll_to(y=cursor, animate=False, immediate=True)
        elif cursor >= top + height:
            self.scroll_to(y=cursor - height + 1, animate=False, immediate=True)
        row = self.current
        if row is not self._highlighted:
            self._highlighted = row
            self.post_message(self.Highlighted(row, by_new_rows=self._setting_rows))
        if self._setting_rows or self.scroll_offset.y != top:
            self.refresh()
        else:  # a key moved the cursor in view: repaint just the two lines
            self.refresh_line(old)
            self.refresh_line(cursor)

    def _move_to(self, index: int) -> None:
        if not self.rows:
            return
        index = max(0, min(len(self.rows) - 1, index))
        newest = 0 if self.newest_first else len(self.rows) - 1
        self.follow = index == newest
        self.cursor = index

    def action_cursor(self, delta: int) -> None:
        self._move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * max(1, self.scrollable_content_region.height - 1))

    def action_first(self) -> None:
        self._move_to(0)

    def action_last(self) -> None:
        self._move_to(len(self.rows) - 1)

    def action_newest(self) -> None:
        self._move_to(0 if self.newest_first else len(self.rows) - 1)

    def action_select(self) -> None:
        if self.current is not None:
            self.post_message(self.Selected(self.current))

    def on_click(self, event: object) -> None:
        y = getattr(event, "y", None)
        if isinstance(y, int):
            self._move_to(self.scroll_offset.y + y)

    # -- line API ----------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        width = self.row_width
        if index >= len(self.rows) or width <= 0:
            return Strip.blank(width)
        row = self.rows[index]
        selected = index == self.cursor
        # A row looks three ways: plain, under the cursor, under the cursor while unfocused.
        look = (2 if self.has_focus else 1) if selected else 0
        key = (row.id, width, look)
        strip = self._cache.get(key)
        if strip is None:
            if isinstance(row, Gap):
                segments = list(gap_text(row, width, self.clock_offset_ns).render(self.app.console))
                if look:
                    pad = Style(bgcolor=LOOK_BACKGROUNDS[look])
                    segments = [Segment(s.text, (s.style or Style()) + pad) for s in segments]
                strip = Strip(segments).adjust_cell_length(width)
            else:
                strip = Strip(row_segments(row, width, self.clock_offset_ns, look), width)
            self._cache[key] = strip
        return strip

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
