"""Pure rendering helpers shared by the dashboard widgets (no Textual, no state).

Everything here turns numbers into rich Text, so it is tested by rendering into a
fixed-width Console. Bars have eighth-of-a-cell precision. Where a bar ends inside a cell
(it covers the cell's left part) the left-aligned eighth blocks ▏▎▍▌▋▊▉ draw it; where a
bar starts inside a cell (it covers the cell's right part) Unicode has no matching glyphs,
so that cell draws the *uncovered* left part with the same blocks in inverse colours.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

from rich.style import Style
from rich.text import Text

EIGHTHS = " ▏▎▍▌▋▊▉█"

LAYER_STYLES: dict[str, str] = {
    "kernel": "#5fafff",
    "event loop": "#ffd75f",
    "syscall": "#d787ff",
    "server": "#87d787",
    "app": "#ff875f",
    "unobserved": "grey50",
}
LAYER_ORDER: tuple[str, ...] = ("kernel", "syscall", "event loop", "server", "app", "unobserved")
BAR_BACKGROUND = "#1c1c1c"
NO_STAGE_COLOR = "grey35"


class StageLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def layer(self) -> str: ...
    @property
    def start_ns(self) -> int: ...
    @property
    def end_ns(self) -> int: ...


def layer_color(layer: str) -> str:
    return LAYER_STYLES.get(layer, "white")


def bar_cells(
    start: float,
    end: float,
    window_start: float,
    window_end: float,
    width: int,
    color: str,
    background: str = BAR_BACKGROUND,
) -> Text:
    """A bar for [start, end] on a `width`-cell axis spanning [window_start, window_end].

    A non-empty interval always shows at least one eighth, so a 3 µs stage next to a 30 ms
    one is still visible.
    """
    text = Text()
    if width <= 0:
        return text
    span = window_end - window_start
    if span <= 0:
        return Text(" " * width, style=Style(bgcolor=background))
    scale = width * 8 / span
    if end < window_start or start > window_end:
        return Text(" " * width, style=Style(bgcolor=background))
    left = max(0.0, min(width * 8.0, (start - window_start) * scale))
    right = max(0.0, min(width * 8.0, (end - window_start) * scale))
    first, last = round(left), round(right)
    if end > start and last <= first:  # keep short stages visible
        if first >= width * 8:
            first = width * 8 - 1
        last = first + 1
    bar = Style(color=color, bgcolor=background)
    inverse = Style(color=background, bgcolor=color)
    empty = Style(bgcolor=background)
    # Whole cells before, partial first cell, whole cells, partial last cell, whole after:
    # appended as runs (a few appends per bar, not one per cell).
    run_text, run_style = "", empty
    for cell in range(width):
        lo, hi = cell * 8, cell * 8 + 8
        covered_lo, covered_hi = max(lo, first), min(hi, last)
        covered = covered_hi - covered_lo
        if covered <= 0:
            glyph, style = " ", empty
        elif covered == 8:
            glyph, style = "█", bar
        elif covered_lo == lo:  # bar covers the left part of the cell
            glyph, style = EIGHTHS[covered], bar
        else:  # bar covers the right part: draw the uncovered left part inverted
            glyph, style = EIGHTHS[covered_lo - lo], inverse
        if style is run_style:
            run_text += glyph
        else:
            if run_text:
                text.append(run_text, run_style)
            run_text, run_style = glyph, style
    if run_text:
        text.append(run_text, run_style)
    return text


def mini_waterfall_cells(
    stages: Iterable[StageLike], start: int, end: int, width: int
) -> list[tuple[str, str]]:
    """(glyph, colour) per cell of a one-row waterfall on the request's own time axis.

    Where several stages share a cell the longer one wins, so the dominant stage shows; a
    cell no stage covers is a grey "·".
    """
    cells: list[tuple[float, str]] = [(0.0, "")] * max(width, 0)
    span = end - start
    if width <= 0 or span <= 0:
        return [(" ", "")] * max(width, 0)
    scale = width / span
    for stage in stages:
        a = (stage.start_ns - start) * scale
        b = (stage.end_ns - start) * scale
        for cell in range(max(0, int(a)), min(width, int(b) + 1)):
            overlap = min(b, cell + 1) - max(a, cell)
            if overlap > cells[cell][0]:
                cells[cell] = (overlap, stage.layer)
    out = []
    for overlap, layer in cells:
        if not layer:
            out.append(("·", NO_STAGE_COLOR))
        else:
            glyph = "█" if overlap >= 0.75 else EIGHTHS[max(1, round(overlap * 8))]
            out.append((glyph, layer_color(layer)))
    return out


def mini_waterfall(stages: Iterable[StageLike], start: int, end: int, width: int) -> Text:
    """One cell row showing every stage of a request on its own time axis, by layer colour."""
    text = Text()
    for glyph, color in mini_waterfall_cells(stages, start, end, width):
        text.append(glyph, color or None)
    return text


def sparkline(values: Sequence[float], width: int) -> Text:
    """The last `width` values as ▁▂▃▄▅▆▇█, scaled to their maximum."""
    ticks = "▁▂▃▄▅▆▇█"
    values = list(values)[-width:]
    if not values:
        return Text(" " * width)
    peak = max(values) or 1.0
    chars = "".join(ticks[min(7, int(v / peak * 7.999))] for v in values)
    return Text(chars.rjust(width), style="#87d7ff")


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return float(sorted_values[rank])
