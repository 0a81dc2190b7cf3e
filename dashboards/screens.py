"""The dashboard's secondary screens: aggregate statistics and help."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

from dashboards.render import layer_color
from dashboards.trace_store import TraceStore
from dashboards.waterfall import OPTIONAL_ROWS
from tracer.model.stages import LAYER_OF, STAGE_NAMES, STAGE_SPANS
from tracer.model.units import format_duration

HELP = """\
[b]reqtrace dashboard keys[/b]

  [b]j / k[/b], ↓ / ↑     move in the request list (or between stages in the waterfall)
  [b]g / G[/b]            first / last request (G turns following back on)
  [b]Enter[/b]            drill into the selected request: move between its stages
  [b]Esc[/b]              back to the list; close a screen
  [b]/[/b]                filter: text, status:5, stage:app, >10ms, <500us, incomplete
  [b]1 … 5[/b]            sort by time, total, dominant stage, path, status (again: reverse)
  [b]space[/b]            pause / resume the list (requests keep being recorded)
  [b]f[/b]                follow the newest request on / off
  [b]a[/b]                aggregate view: per-stage p50/p99 and the slowest requests
  [b]ctrl+s[/b]           save the requests held here to a recording (.jsonl)
  [b]s[/b]                save a screenshot (SVG)
  [b]ctrl+p[/b]           command palette (every action is there)
  [b]?[/b]                this help
  [b]q[/b]                quit (a live run stops its server and finishes its recording)

[b]Reading the waterfall[/b]
Each row is one stage on the request's own time axis; colours are layers:
[#5fafff]kernel[/#5fafff], [#d787ff]syscall[/#d787ff], [#ffd75f]event loop[/#ffd75f], \
[#87d787]server[/#87d787], [#ff875f]app[/#ff875f]. Dimmed rows were not observed for this request
(the panel below the waterfall says why). The panel explains the highlighted stage with
this request's numbers.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 96; max-width: 100%; height: auto; max-height: 90%;
        border: round #5fafff; background: $surface; padding: 1 2; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(HELP)


def aggregate_table(store: TraceStore) -> Table:
    stats = store.stage_stats()
    table = Table(title="per stage, last 2,000 requests", title_justify="left", expand=True)
    table.add_column("stage")
    table.add_column("layer")
    for column in ("count", "p50", "p99", "max"):
        table.add_column(column, justify="right")
    table.add_column("from → to", style="grey62")
    for name in [*STAGE_NAMES, "total"]:
        entry = stats.get(name)
        layer = LAYER_OF.get(name, "")
        label = Text(name, style=layer_color(layer) if layer else "bold")
        if entry is None:
            if name in OPTIONAL_ROWS:  # e.g. body: no uploads in the window
                continue
            table.add_row(label, layer, "0", "—", "—", "—", STAGE_SPANS.get(name, ""))
            continue
        table.add_row(
            label,
            layer,
            f"{entry.count:,}",
            format_duration(entry.p50_ns),
            format_duration(entry.p99_ns),
            format_duration(entry.max_ns),
            STAGE_SPANS.get(name, "first kernel timestamp → last send exit"),
        )
    return table


def slowest_table(store: TraceStore) -> Table:
    table = Table(title="slowest requests", title_justify="left", expand=True)
    table.add_column("id", justify="right")
    table.add_column("request")
    table.add_column("status", justify="right")
    table.add_column("total", justify="right")
    table.add_column("dominant stage")
    for trace in store.slowest(10):
        dominant = trace.dominant_stage()
        table.add_row(
            str(trace.id),
            f"{trace.method} {trace.path}",
            str(trace.status),
            format_duration(trace.total_ns),
            Text(
                f"{dominant.name} {format_duration(dominant.duration_ns)}" if dominant else "—",
                style=layer_color(dominant.layer) if dominant else "",
            ),
        )
    return table


class AggregateScreen(Screen[None]):
    BINDINGS = [Binding("escape,a,q", "app.pop_screen", "back")]
    DEFAULT_CSS = """
    AggregateScreen Static { padding: 0 1; }
    """

    def __init__(self, store: TraceStore) -> None:
        super().__init__()
        self.store = store

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="stages")
            yield Static(id="slowest")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_tables()
        self.set_interval(1.0, self.refresh_tables)

    def refresh_tables(self) -> None:
        self.query_one("#stages", Static).update(aggregate_table(self.store))
        self.query_one("#slowest", Static).update(slowest_table(self.store))
