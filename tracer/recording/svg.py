"""Small SVG pictures for the HTML report (`reqtrace report --html`), as pure functions.

Each function turns numbers into one `<svg>` element (a string) meant to sit inline in an
HTML page: no scripts, no external references, no xmlns needed inside HTML5. Hover text is
SVG `<title>` (the browser's own tooltip), so the pictures need no JavaScript.

Two pictures:

- a latency histogram on a log-scale time axis (`LogAxis`): durations are counted into bins
  of equal width in log10, so a few bins summarise any number of requests and a 3 µs
  kernel stage and a 30 ms app stage can share one axis (the report draws every stage's
  histogram on the same axis, one under another, so their positions compare);
- a waterfall of one request: one row per stage on a linear time axis from the request's
  first kernel timestamp to its last send exit, coloured by layer, with its duration.

Elements carry classes (`histogram`, `bin`, `marker`, `waterfall`, `stage`) and `data-*`
attributes, so tests (and readers of the DOM) can find them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from tracer.model.stages import APP, EVENT_LOOP, GAP, KERNEL, SERVER, SYSCALL
from tracer.model.units import format_duration

# On white paper (reports are printed and attached to tickets); the dashboard's hues.
LAYER_COLORS: dict[str, str] = {
    KERNEL: "#3a7fc1",
    EVENT_LOOP: "#c99a00",
    SYSCALL: "#9a5bc9",
    SERVER: "#3f9a4d",
    APP: "#d9603b",
    GAP: "#a0a0a0",
}
OTHER_COLOR = "#606060"
TEXT_COLOR = "#222"
MUTED_COLOR = "#777"
GRID_COLOR = "#e2e2e2"
FONT = 'font-family="system-ui, sans-serif"'
MARKER_LABEL_PX = 18  # the width of a marker label ("p99") at font-size 9


def layer_color(layer: str) -> str:
    return LAYER_COLORS.get(layer, OTHER_COLOR)


def attr(text: object) -> str:
    """Text made safe inside an XML/HTML attribute or element."""
    return escape(str(text), quote=True)


def _num(value: float) -> str:
    """A coordinate with at most one decimal (keeps the SVG small)."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


# -- log-scale binning ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogAxis:
    """A time axis from 10**lo_exp to 10**hi_exp nanoseconds, `per_decade` bins a decade.

    Bin i covers [10**(lo_exp + i/per_decade), 10**(lo_exp + (i+1)/per_decade)).
    Durations below the axis count in the first bin, above it in the last one.
    """

    lo_exp: int
    hi_exp: int
    per_decade: int = 5

    @property
    def bins(self) -> int:
        return (self.hi_exp - self.lo_exp) * self.per_decade

    def edge(self, i: int) -> float:
        """The lower edge of bin i in ns (edge(bins) is the axis's upper end)."""
        return float(10 ** (self.lo_exp + i / self.per_decade))

    def bin_of(self, ns: float) -> int:
        if ns <= 0:
            return 0
        i = math.floor((math.log10(ns) - self.lo_exp) * self.per_decade + 1e-9)
        return min(max(i, 0), self.bins - 1)

    def position(self, ns: float) -> float:
        """Where ns lies on the axis, 0.0 (start) to 1.0 (end), clamped."""
        if ns <= 0:
            return 0.0
        share = (math.log10(ns) - self.lo_exp) / (self.hi_exp - self.lo_exp)
        return min(max(share, 0.0), 1.0)


def axis_for(min_ns: float, max_ns: float, per_decade: int = 5) -> LogAxis:
    """The smallest whole-decade axis holding [min_ns, max_ns] (at least one decade;
    nothing below 1 ns: a zero-length stage counts in the first bin)."""
    lo = math.floor(math.log10(max(min_ns, 1.0)))
    hi = math.floor(math.log10(max(max_ns, 1.0))) + 1
    return LogAxis(lo, max(hi, lo + 1), per_decade)


def histogram(values_ns: Iterable[int], axis: LogAxis) -> list[int]:
    """How many durations fall in each bin of the axis."""
    counts = [0] * axis.bins
    lo, per, last = axis.lo_exp, axis.per_decade, axis.bins - 1
    log10, floor = math.log10, math.floor
    for ns in values_ns:
        i = floor((log10(ns) - lo) * per + 1e-9) if ns > 0 else 0
        counts[0 if i < 0 else last if i > last else i] += 1
    return counts


def tick_label(ns: float) -> str:
    """An axis label for a power of ten: 1 ns, 10 µs, 100 ms, 1 s, 10 s."""
    for unit, size in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= size:
            return f"{ns / size:g} {unit}"
    return f"{ns:g} ns"


def histogram_svg(
    counts: Sequence[int],
    axis: LogAxis,
    *,
    color: str,
    markers: Sequence[tuple[str, float]] = (),
    label: str = "",
    width: int = 440,
    height: int = 52,
    ticks: bool = True,
) -> str:
    """Bars of `counts` over the log axis, vertical lines at `markers` ((name, ns), e.g.
    p50/p90/p99), decade ticks underneath when `ticks`. Bar heights are linear in the count,
    scaled to the largest bin; every non-empty bin shows at least 1 px."""
    if len(counts) != axis.bins:
        raise ValueError(f"{len(counts)} counts for an axis of {axis.bins} bins")
    axis_h = 14 if ticks else 0
    plot_h = height - axis_h - 10  # 10 px on top for the marker labels
    top = 10
    step = width / axis.bins
    peak = max(counts) if counts else 0
    total = sum(counts)
    parts = [
        f'<svg class="histogram" data-label="{attr(label)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" {FONT} font-size="9">',
        f"<title>{attr(label)}: {total:,} durations in {axis.bins} log-scale bins</title>",
        f'<line x1="0" y1="{top + plot_h}" x2="{width}" y2="{top + plot_h}" '
        f'stroke="{GRID_COLOR}"/>',
    ]
    for decade in range(axis.lo_exp, axis.hi_exp + 1):
        x = axis.position(10.0**decade) * width
        parts.append(
            f'<line x1="{_num(x)}" y1="{top}" x2="{_num(x)}" y2="{top + plot_h}" '
            f'stroke="{GRID_COLOR}"/>'
        )
        if ticks:
            anchor = "start" if decade == axis.lo_exp else "end" if x >= width else "middle"
            parts.append(
                f'<text x="{_num(x)}" y="{height - 3}" text-anchor="{anchor}" '
                f'fill="{MUTED_COLOR}">{attr(tick_label(10.0**decade))}</text>'
            )
    for i, count in enumerate(counts):
        if not count:
            continue
        bar_h = max(1.0, plot_h * count / peak)
        x = i * step
        low, high = format_duration(axis.edge(i)), format_duration(axis.edge(i + 1))
        parts.append(
            f'<rect class="bin" data-count="{count}" x="{_num(x + 0.5)}" '
            f'y="{_num(top + plot_h - bar_h)}" width="{_num(max(step - 1, 1))}" '
            f'height="{_num(bar_h)}" fill="{color}"><title>{low} to {high}: {count:,}'
            "</title></rect>"
        )
    labelled_at = -math.inf
    for name, ns in markers:
        x = axis.position(ns) * width
        parts.append(
            f'<line class="marker" data-marker="{attr(name)}" x1="{_num(x)}" y1="{top}" '
            f'x2="{_num(x)}" y2="{top + plot_h}" stroke="{TEXT_COLOR}" stroke-width="1" '
            f'stroke-dasharray="2,2"><title>{attr(name)} {format_duration(ns)}</title></line>'
        )
        if x - labelled_at >= MARKER_LABEL_PX:  # labels closer than that would overlap
            labelled_at = x
            parts.append(
                f'<text x="{_num(min(max(x, 8), width - 8))}" y="8" text-anchor="middle" '
                f'fill="{TEXT_COLOR}">{attr(name)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def axis_svg(axis: LogAxis, width: int = 440, height: int = 16) -> str:
    """The decade labels of a log axis alone (a header row above stacked histograms)."""
    parts = [
        f'<svg class="axis" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'{FONT} font-size="9">'
    ]
    for decade in range(axis.lo_exp, axis.hi_exp + 1):
        x = axis.position(10.0**decade) * width
        anchor = "start" if decade == axis.lo_exp else "end" if x >= width else "middle"
        parts.append(
            f'<text x="{_num(x)}" y="{height - 4}" text-anchor="{anchor}" '
            f'fill="{MUTED_COLOR}">{attr(tick_label(10.0**decade))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


# -- waterfall ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    """One row of a waterfall: a stage (or any interval) in absolute ns."""

    name: str
    layer: str
    start_ns: int
    end_ns: int
    note: str = ""  # extra hover text (who held the loop, why unobserved)


def nice_step(span: float, target: int = 5) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about `target` ticks."""
    if span <= 0:
        return 1.0
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def waterfall_svg(
    bars: Sequence[Bar],
    start_ns: int,
    end_ns: int,
    *,
    width: int = 760,
    row_height: int = 16,
    label_width: int = 110,
    value_width: int = 70,
    title: str = "",
) -> str:
    """One row per bar on a linear axis [start_ns, end_ns]: name, bar, duration.

    A bar always shows at least 1 px, so a 2 µs kernel stage beside a 20 ms app stage is
    still seen (its duration is written at the row's end and in its hover text)."""
    span = max(end_ns - start_ns, 1)
    plot_w = width - label_width - value_width
    axis_h = 16
    height = len(bars) * row_height + axis_h + 2
    parts = [
        f'<svg class="waterfall" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" {FONT} font-size="11">',
    ]
    if title:
        parts.append(f"<title>{attr(title)}</title>")
    step = nice_step(span)
    tick = 0.0
    while tick <= span + 1e-6:
        x = label_width + plot_w * tick / span
        parts.append(
            f'<line x1="{_num(x)}" y1="0" x2="{_num(x)}" y2="{height - axis_h}" '
            f'stroke="{GRID_COLOR}"/><text x="{_num(x)}" y="{height - 4}" '
            f'text-anchor="middle" font-size="9" fill="{MUTED_COLOR}">'
            f"{attr(format_duration(tick))}</text>"
        )
        tick += step
    for row, bar in enumerate(bars):
        y = row * row_height
        x0 = label_width + plot_w * (bar.start_ns - start_ns) / span
        w = max(1.0, plot_w * (bar.end_ns - bar.start_ns) / span)
        duration = format_duration(bar.end_ns - bar.start_ns)
        hover = f"{bar.name} ({bar.layer}): {duration}" + (f" — {bar.note}" if bar.note else "")
        parts.append(
            f'<text x="{label_width - 6}" y="{y + row_height - 4}" text-anchor="end" '
            f'fill="{TEXT_COLOR}">{attr(bar.name)}</text>'
            f'<rect class="stage" data-stage="{attr(bar.name)}" '
            f'data-ns="{bar.end_ns - bar.start_ns}" x="{_num(x0)}" y="{y + 3}" '
            f'width="{_num(w)}" height="{row_height - 6}" fill="{layer_color(bar.layer)}">'
            f"<title>{attr(hover)}</title></rect>"
            f'<text x="{width - 4}" y="{y + row_height - 4}" text-anchor="end" '
            f'fill="{TEXT_COLOR}">{attr(duration)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def share_bar_svg(
    bars: Sequence[Bar], start_ns: int, end_ns: int, *, width: int = 240, height: int = 12
) -> str:
    """The stages of one request as one stacked bar (each stage's share of the total)."""
    span = max(end_ns - start_ns, 1)
    parts = [
        f'<svg class="sharebar" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">'
    ]
    for bar in bars:
        x0 = width * (bar.start_ns - start_ns) / span
        w = width * (bar.end_ns - bar.start_ns) / span
        if w < 0.2:
            continue
        share = (bar.end_ns - bar.start_ns) / span
        parts.append(
            f'<rect x="{_num(x0)}" y="0" width="{_num(w)}" height="{height}" '
            f'fill="{layer_color(bar.layer)}"><title>{attr(bar.name)} '
            f"{format_duration(bar.end_ns - bar.start_ns)} ({share:.0%})</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)
