"""The request list: one line per request, drawn with the line API (no widget per row).

Rows come from the TraceStore's current view. Each visible line is rendered on demand by
`render_line` from a cache keyed by (trace id, width, look), so scrolling and new traces
cost only the lines that changed. Follow mode keeps the cursor on the newest request until
the user moves up; moving back to the end turns it on again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from dashboards.render import layer_color, mini_waterfall
from tracer.model.trace import RequestTrace
from tracer.model.units import format_duration

TIME_W, METHOD_W, STATUS_W, TOTAL_W, DOMINANT_W, WATERFALL_W = 12, 7, 4, 10, 11, 16
FIXED_W = TIME_W + METHOD_W + STATUS_W + TOTAL_W + DOMINANT_W + WATERFALL_W + 6


def column_header(width: int, sort_key: str, reverse: bool) -> Text:
    """The titles above the list, with the sort column marked."""
    arrow = "▼" if reverse else "▲"

    def title(label: str, key: str, size: int, right: bool = False) -> str:
        label = f"{label}{arrow}" if key == sort_key else label
        return label.rjust(size) if right else label.ljust(size)

    path_w = max(8, width - FIXED_W)
    line = " ".join(
        [
            title("time", "time", TIME_W),
            title("method", "", METHOD_W),
            title("path", "path", path_w),
            title("st", "status", STATUS_W),
            title("total", "total", TOTAL_W, right=True),
            title("dominant", "dominant", DOMINANT_W),
            "waterfall".ljust(WATERFALL_W),
        ]
    )
    return Text(line[:width], style="bold")


def row_text(trace: RequestTrace, width: int, clock_offset_ns: int | None) -> Text:
    """One request as a list line: time, method, path, status, total, dominant, waterfall."""
    if clock_offset_ns is None:  # no wall clock known: seconds on the monotonic clock
        when = f"+{trace.start_ns / 1e9:,.3f}"[-TIME_W:]
    else:
        seconds = (trace.start_ns + clock_offset_ns) / 1e9
        millis = int(seconds % 1 * 1000)
        when = time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"
    path_w = max(8, width - FIXED_W)
    path = trace.path if len(trace.path) <= path_w else trace.path[: path_w - 1] + "…"
    dominant = trace.dominant_stage()
    status_style = (
        "red"
        if trace.status >= 500 or not trace.status
        else ("yellow" if trace.status >= 400 else "green")
    )
    text = Text(no_wrap=True, overflow="crop")
    text.append(when.ljust(TIME_W) + " ", "grey62")
    text.append(trace.method[:METHOD_W].ljust(METHOD_W) + " ", "bold")
    text.append(path.ljust(path_w) + " ")
    text.append(str(trace.status or "—").rjust(STATUS_W - 1).ljust(STATUS_W) + " ", status_style)
    text.append(format_duration(trace.total_ns).rjust(TOTAL_W) + " ")
    if dominant:
        text.append(dominant.name[:DOMINANT_W].ljust(DOMINANT_W) + " ", layer_color(dominant.layer))
    else:
        text.append("—".ljust(DOMINANT_W) + " ", "grey50")
    text.append_text(mini_waterfall(trace.stages, trace.start_ns, trace.end_ns, WATERFALL_W))
    if not trace.complete:
        text.append(" ⚠", "yellow")
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
    RequestList { height: 1fr; }
    """

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)
    follow: reactive[bool] = reactive(True)

    class Highlighted(Message):
        def __init__(self, trace: RequestTrace | None, by_new_rows: bool = False) -> None:
            super().__init__()
            self.trace = trace
            self.by_new_rows = by_new_rows  # the cursor followed new rows (not a key press)

    class Selected(Message):
        def __init__(self, trace: RequestTrace) -> None:
            super().__init__()
            self.trace = trace

    def __init__(self, clock_offset_ns: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.rows: Sequence[RequestTrace] = ()
        self.clock_offset_ns = clock_offset_ns
        self._cache: dict[tuple[int, int, int], Strip] = {}
        self._highlighted_id: int | None = None
        self._setting_rows = False

    # -- data --------------------------------------------------------------------------

    def set_rows(self, rows: Sequence[RequestTrace]) -> None:
        """Show `rows`, keeping the cursor on the same request (or the newest, following)."""
        current = self.current
        self.rows = rows
        self._setting_rows = True
        self.virtual_size = Size(self.size.width, len(rows))
        if len(self._cache) > 4096:
            self._cache.clear()
        if self.follow or current is None:
            self.cursor = max(0, len(rows) - 1)
        else:
            for index, trace in enumerate(rows):
                if trace.id == current.id:
                    self.cursor = index
                    break
            else:
                self.cursor = min(self.cursor, max(0, len(rows) - 1))
        self._setting_rows = False
        self.refresh()

    @property
    def current(self) -> RequestTrace | None:
        if 0 <= self.cursor < len(self.rows):
            return self.rows[self.cursor]
        return None

    # -- cursor ------------------------------------------------------------------------

    def watch_cursor(self, cursor: int) -> None:
        height = max(1, self.size.height)
        top = self.scroll_offset.y
        if cursor < top:
            self.scroll_to(y=cursor, animate=False)
        elif cursor >= top + height:
            self.scroll_to(y=cursor - height + 1, animate=False)
        trace = self.current
        trace_id = trace.id if trace else None
        if trace_id != self._highlighted_id:
            self._highlighted_id = trace_id
            self.post_message(self.Highlighted(trace, by_new_rows=self._setting_rows))
        self.refresh()

    def _move_to(self, index: int) -> None:
        if not self.rows:
            return
        index = max(0, min(len(self.rows) - 1, index))
        self.follow = index == len(self.rows) - 1
        self.cursor = index

    def action_cursor(self, delta: int) -> None:
        self._move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * max(1, self.size.height - 1))

    def action_first(self) -> None:
        self._move_to(0)

    def action_last(self) -> None:
        self._move_to(len(self.rows) - 1)

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
        width = self.size.width
        if index >= len(self.rows) or width <= 0:
            return Strip.blank(width)
        trace = self.rows[index]
        selected = index == self.cursor
        # A row looks three ways: plain, under the cursor, under the cursor while unfocused.
        look = (2 if self.has_focus else 1) if selected else 0
        key = (trace.id, width, look)
        strip = self._cache.get(key)
        if strip is None:
            text = row_text(trace, width, self.clock_offset_ns)
            segments = list(text.render(self.app.console))
            pad = None
            if selected:
                pad = Style(bgcolor="#264f78" if self.has_focus else "#3a3a3a")
                segments = [Segment(s.text, (s.style or Style()) + pad) for s in segments]
            strip = Strip(segments).adjust_cell_length(width, pad)
            self._cache[key] = strip
        return strip

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
