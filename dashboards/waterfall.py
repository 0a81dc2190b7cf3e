"""The selected request's waterfall: every stage on one time axis, labelled by layer.

All canonical stages are listed in timeline order; those not observed for this request are
shown dimmed (the teaching panel says why), so a newcomer sees the whole path every time.
On a short terminal (compact) only the observed stages get a row, the title names the
others, and the connection line is left out; if the rows still do not fit, the rows around
the cursor are shown. The cursor moves over the stages when the waterfall has focus and
tells the teaching panel which one to explain.

The widget's height is fixed by the layout (not by the trace), so showing another request
repaints the pane without a layout pass.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from dashboards.render import bar_cells, layer_color
from dashboards.teaching import explain_connection
from tracer.model.stages import LAYER_OF, OPTIONAL_STAGES, STAGE_LAYERS
from tracer.model.trace import RequestTrace
from tracer.model.units import format_duration

LAYER_W, STAGE_W, DURATION_W = 11, 11, 10


def waterfall_lines(
    trace: RequestTrace,
    width: int,
    cursor: int | None,
    compact: bool = False,
    max_rows: int | None = None,
) -> list[Text]:
    """The waterfall as lines of text (pure: used by the widget and by tests).

    `max_rows` bounds the stage rows (the title and connection lines not counted).
    """
    lines = []
    names = row_names(trace, compact)
    hookless = hookless_stages(trace)
    title = Text(no_wrap=True, overflow="ellipsis")
    title.append(f"{trace.method} {trace.path}", "bold")
    title.append(f" → {trace.status or 'no response'}", "bold")
    title.append(f"  total {format_duration(trace.total_ns)}", "bold #87d7ff")
    if not trace.complete:
        title.append("  ⚠ incomplete", "yellow")
    if compact:
        unseen = [name for name in row_names(trace) if name not in names]
        if unseen:
            title.append(f"  not seen: {', '.join(unseen)}", "grey50")
    else:
        title.append(f"  {trace.client[0]}:{trace.client[1]} → {trace.server[0]}:{trace.server[1]}")
    lines.append(title)
    bar_w = max(6, width - LAYER_W - STAGE_W - DURATION_W - 3)
    previous_layer = ""
    layers = dict(STAGE_LAYERS)
    first, last = 0, len(names)
    if max_rows is not None and len(names) > max_rows:
        middle = cursor if cursor is not None else _dominant_index(trace, names)
        first = max(0, min(len(names) - max_rows, middle - max_rows // 2))
        last = first + max_rows
    for index, name in enumerate(names):
        if not first <= index < last:
            continue
        stage = trace.stage(name)
        layer = stage.layer if stage else layers.get(name, "")
        line = Text(no_wrap=True, overflow="crop")
        marker = "▶" if cursor == index else " "
        if (index == first and first > 0) or (index == last - 1 and last < len(names)):
            marker = "⋮" if cursor != index else marker
        label = layer if layer != previous_layer or index == first else ""
        previous_layer = layer
        line.append(marker, "bold #ffffff")
        line.append(label.ljust(LAYER_W - 1)[: LAYER_W - 1] + " ", f"bold {layer_color(layer)}")
        if stage is None:
            line.append(name.ljust(STAGE_W)[:STAGE_W] + " ", "grey50")
            line.append("·" * bar_w, "grey27")
            missing = "no hooks" if name in hookless else "not seen"
            line.append(missing.rjust(DURATION_W + 1), "grey50 italic")
        else:
            line.append(name.ljust(STAGE_W)[:STAGE_W] + " ", layer_color(layer))
            line.append_text(
                bar_cells(
                    stage.start_ns, stage.end_ns, trace.start_ns, trace.end_ns, bar_w,
                    layer_color(layer),
                )
            )  # fmt: skip
            line.append(format_duration(stage.duration_ns).rjust(DURATION_W + 1))
        if cursor == index:
            line.stylize("on #303a4a")
        lines.append(line)
    if not compact:
        lines.append(explain_connection(trace))
    return lines


HOOKLESS_MARK = "not observable without reqtrace's hooks"  # kernel_only.py's notes say so


def hookless_stages(trace: RequestTrace) -> set[str]:
    """Stages this trace cannot have because the server had no hooks (`reqtrace attach`, or
    a server `run` could not hook): the note that says so names them
    (tracer/correlate/kernel_only.py)."""
    for note in trace.notes:
        names, _, reason = note.partition(": ")
        if reason.startswith(HOOKLESS_MARK):
            return set(names.split(", "))
    return set()


def _dominant_index(trace: RequestTrace, names: list[str]) -> int:
    dominant = trace.dominant_stage()
    return names.index(dominant.name) if dominant and dominant.name in names else 0


# Rows the waterfall keeps for optional stages besides the ones every request has: a request
# rarely has more than a few (a body, a loop queue, an unobserved gap); more scroll.
OPTIONAL_ROOM = 3


def usual_rows() -> int:
    """Stage rows of a usual request: every stage it must have, plus room for a few more."""
    return len(STAGE_LAYERS) - len(OPTIONAL_STAGES) + OPTIONAL_ROOM


def waterfall_height(compact: bool, rows: int | None = None) -> int:
    """Lines the pane needs: title, the stage rows (`usual_rows()` by default), and the
    connection line unless compact."""
    stage_rows = usual_rows() if rows is None else rows
    return 1 + stage_rows + (0 if compact else 1)


# Stages that only some requests can have (a body only with an upload): their row is shown
# when the stage is there or a note explains its absence, not as "not seen" on every GET.
OPTIONAL_ROWS = OPTIONAL_STAGES


def row_names(trace: RequestTrace | None, compact: bool = False) -> list[str]:
    """The waterfall's rows: every canonical stage in order, then any others the trace has.

    Compact: only the stages this request has.
    """
    names = [name for name, _ in STAGE_LAYERS]
    if trace is None:
        return [name for name in names if name not in OPTIONAL_ROWS]
    present = {s.name for s in trace.stages}
    if compact:
        return [n for n in names if n in present] + [
            s.name for s in trace.stages if s.name not in LAYER_OF
        ]
    noted = {note.split(":", 1)[0] for note in trace.notes}
    rows = [n for n in names if n not in OPTIONAL_ROWS or n in present or n in noted]
    return rows + [s.name for s in trace.stages if s.name not in rows]


def stage_at(index: int, trace: RequestTrace | None, compact: bool = False) -> str:
    names = row_names(trace, compact) or row_names(None)
    return names[max(0, min(index, len(names) - 1))]


class Waterfall(Widget, can_focus=True):
    BINDINGS = [
        Binding("j,down", "move(1)", "next stage", show=False),
        Binding("k,up", "move(-1)", "previous stage", show=False),
    ]

    DEFAULT_CSS = """
    Waterfall { height: 12; padding: 0 1; }
    """

    trace: reactive[RequestTrace | None] = reactive(None, layout=False)
    cursor: reactive[int] = reactive(0)

    class StageHighlighted(Message):
        def __init__(self, stage_name: str) -> None:
            super().__init__()
            self.stage_name = stage_name

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.compact = False
        self.gap_text: Text | None = None  # shown instead of a trace (a gap row is selected)

    def set_compact(self, compact: bool, height: int) -> None:
        """The layout's choice: compact rows, and the pane's fixed height."""
        if compact != self.compact:
            stage = stage_at(self.cursor, self.trace, self.compact)
            self.compact = compact
            names = row_names(self.trace, compact)
            if stage in names:
                self.cursor = names.index(stage)
        self.styles.height = height
        self.refresh()

    def render(self) -> RenderableType:
        if self.gap_text is not None:
            return self.gap_text
        if self.trace is None:
            return Text("No request selected yet: requests appear here as they complete.", "dim")
        cursor = self.cursor if self.has_focus else None
        max_rows = max(1, self.size.height - (1 if self.compact else 2))
        lines = waterfall_lines(self.trace, self.size.width, cursor, self.compact, max_rows)
        return Group(*lines)

    def watch_trace(self, trace: RequestTrace | None) -> None:
        if trace is not None and not self.has_focus:
            # Without a stage chosen, explain the stage that dominates this request.
            dominant = trace.dominant_stage()
            names = row_names(trace, self.compact)
            if dominant and dominant.name in names:
                self.cursor = names.index(dominant.name)
        self.post_message(self.StageHighlighted(stage_at(self.cursor, trace, self.compact)))

    def watch_cursor(self, cursor: int) -> None:
        self.post_message(self.StageHighlighted(stage_at(cursor, self.trace, self.compact)))

    def action_move(self, delta: int) -> None:
        count = len(row_names(self.trace, self.compact))
        self.cursor = max(0, min(count - 1, self.cursor + delta))

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
