"""The dashboard's secondary screens: aggregate statistics and help."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

from dashboards.aggregates import TOTAL
from dashboards.render import layer_color
from dashboards.trace_store import TraceStore
from dashboards.waterfall import OPTIONAL_ROWS
from tracer.model.stages import LAYER_OF, STAGE_NAMES, STAGE_SPANS
from tracer.model.units import format_duration

HELP = """\
[b]reqtrace dashboard keys[/b]

  [b]j / k[/b], ↓ / ↑     move in the request list (or between stages in the waterfall)
  [b]g / G[/b]            first / last row (G on the newest turns following back on)
  [b]Enter[/b]            drill into the selected request: move between its stages
  [b]Esc[/b]              back to the list; close a screen
  [b]/[/b]                filter: text, status:5, stage:app, >10ms, <500us, incomplete
  [b]1 … 5[/b]            sort by time, total, dominant stage, path, status (again: reverse);
                   the list goes to its top (oldest first by time: to the newest)
  [b]space[/b]            pause / resume the list (requests keep being counted and recorded)
  [b]f[/b]                follow the newest request on / off
  [b]a[/b]                aggregate view: per-stage p50/p99 and the slowest requests
  [b]h[/b]                jump to the request that held the event loop while this one
                   waited (loop_busy, loop_queue, handoff: the lesson names it)
  [b]ctrl+s[/b]           save the requests listed (those the filter shows) to a .jsonl
  [b]s[/b]                save a screenshot (SVG)
  [b]ctrl+p[/b]           command palette (every action is there)
  [b]?[/b]                this help
  [b]q[/b]                quit (a live run stops its server and finishes its recording)

[b]Reading the list[/b]
  time▲ / total▼   the sort column and its direction (▲ smallest or oldest first)
  [grey62]+5,000.130[/grey62]       start time on the monotonic clock (no wall clock known)
  …                the path (or another text) is cut to fit
  —                no status: the server sent no response
  [yellow]⚠[/yellow]                incomplete: records were lost, some stages may be missing
  [grey58]⋯ 2,491 more[/grey58]     requests of that interval not listed: more arrived than anyone
                   can read; the list keeps the slowest, failed and newest ones (the
                   row's detail says more). The rate and the aggregate view count all.
  waterfall        the request on its own time axis, one cell per 1/N of its total,
                   coloured by the layer of the stage that covers most of the cell;
                   ▏▎▍▌▋▊▉█ a cell partly covered by it, [grey35]·[/grey35] no stage (time between
                   two observed stages, or not observed)

[b]Reading the waterfall[/b]
Each row is one stage on the request's own time axis; colours are layers:
[#5fafff]kernel[/#5fafff], [#d787ff]syscall[/#d787ff], [#ffd75f]event loop[/#ffd75f], \
[#87d787]server[/#87d787], [#ff875f]app[/#ff875f]; [grey50]unobserved[/grey50]: time between two \
observed stages, with its reason (no silent gaps).
  █ ▏▎▍▌▋▊▉        the stage's bar, to an eighth of a cell; a cell where a bar starts
                   part-way shows the uncovered part in inverse colours
  [grey27]·······[/grey27]          a stage not observed for this request ("not seen"; the lesson
                   below says why); ⋮ more rows above or below (short terminal)
  no hooks         a stage `reqtrace attach` cannot see: the server has no reqtrace hooks
                   (parse, loop queue, app); its `server` stage holds that time
  ▶                the stage explained below (drilled in)
  a → b            client address → server address; method path → status
The panel below the waterfall explains the highlighted stage with this request's numbers
(one line on a short terminal: Enter shows it all).

[b]The header[/b]
  ▁▂▃▄▅▆▇█         requests per second over the last 20 seconds (or 10), scaled to the peak
  lost N           records the ring buffer dropped (traces that lost records say so)
  filter: … (N match)   the filter in force and how many requests passed it
  list: slowest+failed+newest   the list is leaving requests out (see ⋯ above)
  kernel 9/9 · …   probe points attached per layer (yellow: some are missing)
  attach mode: …   a server traced by `reqtrace attach`: kernel and syscall stages only
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


def aggregate_table(store: TraceStore, window: bool) -> Table:
    found = store.stage_stats(window)
    stats = found.stages
    scope = (
        f"last {store.aggregates.window_s} s" if window else "all requests"
    ) + f": {found.requests:,} requests"
    if found.sampled < found.requests:
        scope += f" (stage figures from a random sample of {found.sampled:,})"
    scope += "; the filter does not apply here"
    table = Table(title=f"per stage, {scope}", title_justify="left", expand=True)
    table.add_column("stage")
    table.add_column("layer")
    table.add_column("seen in", justify="right")
    for column in ("p50", "p99", "max"):
        table.add_column(column, justify="right")
    table.add_column("from → to", style="grey62")
    sampled = max(1, found.sampled)
    for name in [*STAGE_NAMES, *(n for n in stats if n not in STAGE_NAMES and n != TOTAL), TOTAL]:
        entry = stats.get(name)
        layer = LAYER_OF.get(name, "")
        label = Text(name, style=layer_color(layer) if layer else "bold")
        span = STAGE_SPANS.get(name, "first kernel timestamp → last send exit")
        if entry is None:
            if name in OPTIONAL_ROWS:  # e.g. body: no uploads in the window
                continue
            table.add_row(label, layer, "0%", "—", "—", "—", span)
            continue
        share = 1.0 if name == TOTAL else entry.count / sampled
        table.add_row(
            label,
            layer,
            f"{share:.0%}" if name != TOTAL else f"{entry.count:,}",
            format_duration(entry.p50_ns),
            format_duration(entry.p99_ns),
            format_duration(entry.max_ns),
            span,
        )
    return table


def slowest_table(store: TraceStore, window: bool) -> Table:
    scope = f"last {store.aggregates.window_s} s" if window else "all requests"
    table = Table(title=f"slowest requests, {scope}", title_justify="left", expand=True)
    table.add_column("id", justify="right")
    table.add_column("request")
    table.add_column("status", justify="right")
    table.add_column("total", justify="right")
    table.add_column("dominant stage")
    for trace in store.slowest(10, window):
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

    def __init__(self, store: TraceStore, window: bool = True) -> None:
        super().__init__()
        self.store = store
        self.window = window  # live: the last minute; a recording: all of it

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="stages")
            yield Static(id="slowest")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_tables()
        self.set_interval(1.0, self.refresh_tables)

    def refresh_tables(self) -> None:
        with self.store.lock:
            stages = aggregate_table(self.store, self.window)
            slowest = slowest_table(self.store, self.window)
        self.query_one("#stages", Static).update(stages)
        self.query_one("#slowest", Static).update(slowest)
