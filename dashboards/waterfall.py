"""The selected request's waterfall: every stage on one time axis, labelled by layer.

All canonical stages are listed in timeline order; those not observed for this request are
shown dimmed (the teaching panel says why), so a newcomer sees the whole path every time.
The cursor moves over the stages when the waterfall has focus and tells the teaching panel
which one to explain.
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
from tracer.model.stages import OPTIONAL_STAGES, STAGE_LAYERS
from tracer.model.trace import RequestTrace
from tracer.model.units import format_duration

LAYER_W, STAGE_W, DURATION_W = 11, 11, 10


def waterfall_lines(trace: RequestTrace, width: int, cursor: int | None) -> list[Text]:
    """The waterfall as lines of text (pure: used by the widget and by tests)."""
    lines = []
    title = Text(no_wrap=True, overflow="ellipsis")
    title.append(f"{trace.method} {trace.path}", "bold")
    title.append(f" → {trace.status or 'no response'}", "bold")
    title.append(f"   total {format_duration(trace.total_ns)}", "bold #87d7ff")
    title.append(f"   {trace.client[0]}:{trace.client[1]} → {trace.server[0]}:{trace.server[1]}")
    if not trace.complete:
        title.append("   ⚠ incomplete", "yellow")
    lines.append(title)
    bar_w = max(10, width - LAYER_W - STAGE_W - DURATION_W - 3)
    previous_layer = ""
    layers = dict(STAGE_LAYERS)
    for index, name in enumerate(row_names(trace)):
        stage = trace.stage(name)
        layer = stage.layer if stage else layers.get(name, "")
        line = Text(no_wrap=True, overflow="crop")
        marker = "▶" if cursor == index else " "
        label = layer if layer != previous_layer else ""
        previous_layer = layer
        line.append(marker, "bold #ffffff")
        line.append(label.ljust(LAYER_W - 1)[: LAYER_W - 1] + " ", f"bold {layer_color(layer)}")
        if stage is None:
            line.append(name.ljust(STAGE_W)[:STAGE_W] + " ", "grey50")
            line.append("·" * bar_w, "grey27")
            line.append("not seen".rjust(DURATION_W + 1), "grey50 italic")
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
    lines.append(explain_connection(trace))
    return lines


# Stages that only some requests can have (a body only with an upload): their row is shown
# when the stage is there or a note explains its absence, not as "not seen" on every GET.
OPTIONAL_ROWS = OPTIONAL_STAGES


def row_names(trace: RequestTrace | None) -> list[str]:
    """The waterfall's rows: every canonical stage in order, then any others the trace has."""
    names = [name for name, _ in STAGE_LAYERS]
    if trace is None:
        return [name for name in names if name not in OPTIONAL_ROWS]
    present = {s.name for s in trace.stages}
    noted = {note.split(":", 1)[0] for note in trace.notes}
    rows = [n for n in names if n not in OPTIONAL_ROWS or n in present or n in noted]
    return rows + [s.name for s in trace.stages if s.name not in rows]


def stage_at(index: int, trace: RequestTrace | None) -> str:
    names = row_names(trace)
    return names[max(0, min(index, len(names) - 1))]


class Waterfall(Widget, can_focus=True):
    BINDINGS = [
        Binding("j,down", "move(1)", "next stage", show=False),
        Binding("k,up", "move(-1)", "previous stage", show=False),
    ]

    DEFAULT_CSS = """
    Waterfall { height: auto; min-height: 14; padding: 0 1; }
    """

    trace: reactive[RequestTrace | None] = reactive(None)
    cursor: reactive[int] = reactive(0)

    class StageHighlighted(Message):
        def __init__(self, stage_name: str) -> None:
            super().__init__()
            self.stage_name = stage_name

    def render(self) -> RenderableType:
        if self.trace is None:
            return Text("No request selected yet: requests appear here as they complete.", "dim")
        cursor = self.cursor if self.has_focus else None
        return Group(*waterfall_lines(self.trace, self.size.width, cursor))

    def watch_trace(self, trace: RequestTrace | None) -> None:
        if trace is not None and not self.has_focus:
            # Without a stage chosen, explain the stage that dominates this request.
            dominant = trace.dominant_stage()
            names = row_names(trace)
            if dominant and dominant.name in names:
                self.cursor = names.index(dominant.name)
        self.post_message(self.StageHighlighted(stage_at(self.cursor, trace)))

    def watch_cursor(self, cursor: int) -> None:
        self.post_message(self.StageHighlighted(stage_at(cursor, self.trace)))

    def action_move(self, delta: int) -> None:
        count = len(row_names(self.trace))
        self.cursor = max(0, min(count - 1, self.cursor + delta))

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
