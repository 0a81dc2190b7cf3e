"""Rendering helpers of the dashboard, checked glyph by glyph in a fixed-width console."""

from __future__ import annotations

import io
from dataclasses import dataclass

from rich.console import Console

from dashboards.render import bar_cells, mini_waterfall, percentile, sparkline
from tracer.model.units import format_duration


@dataclass
class S:
    name: str
    layer: str
    start_ns: int
    end_ns: int


def _render(text) -> str:  # type: ignore[no-untyped-def]
    console = Console(width=40, color_system=None, record=True, file=io.StringIO())
    console.print(text, end="")
    return console.export_text()


def test_full_window_bar_fills_every_cell() -> None:
    assert bar_cells(0, 100, 0, 100, 10, "red").plain == "█" * 10


def test_bar_ending_inside_a_cell_uses_left_eighths() -> None:
    # 10 cells of 8 eighths over 80 ns: 1 ns = 1 eighth. 0..12 -> one full cell + 4/8.
    text = bar_cells(0, 12, 0, 80, 10, "red")
    assert text.plain == "█▌" + " " * 8
    assert _render(text) == "█▌" + " " * 8


def test_bar_starting_inside_a_cell_draws_the_gap_inverted() -> None:
    text = bar_cells(3, 16, 0, 80, 10, "red")  # starts 3/8 into cell 0, ends at cell 2
    assert text.plain[:2] == "▍█"
    first_cell_style = text.get_style_at_offset(Console(), 0)
    assert first_cell_style.color.name == "#1c1c1c"  # background colour in front: inverted
    assert str(first_cell_style.bgcolor.name) == "red"


def test_tiny_stage_stays_visible() -> None:
    text = bar_cells(500, 501, 0, 1_000_000, 20, "red")
    assert text.plain.strip() == "▏"


def test_bar_outside_window_is_clipped() -> None:
    assert bar_cells(-50, 200, 0, 80, 10, "red").plain == "█" * 10
    assert bar_cells(100, 200, 0, 80, 10, "red").plain == " " * 10


def test_format_duration_switches_units() -> None:
    assert format_duration(0) == "0 µs"
    assert format_duration(400) == "<1 µs"
    assert format_duration(312_000) == "312 µs"
    assert format_duration(9_999_000) == "9,999 µs"
    assert format_duration(12_345_000) == "12.3 ms"
    assert format_duration(1_234_000_000) == "1,234 ms"
    assert format_duration(12_000_000_000) == "12.0 s"


def test_mini_waterfall_shows_the_dominant_stage() -> None:
    stages = [S("recv", "syscall", 0, 10), S("app", "app", 10, 100)]
    text = mini_waterfall(stages, 0, 100, 10)
    assert len(text.plain) == 10
    assert text.plain[-1] == "█"
    colours = {span.style for span in text.spans}
    assert "#ff875f" in colours  # app's colour


def test_sparkline_scales_to_its_peak() -> None:
    assert sparkline([0, 5, 10], 3).plain == "▁▄█"
    assert sparkline([], 4).plain == "    "


def test_percentile_nearest_rank() -> None:
    values = sorted(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([], 0.5) == 0
