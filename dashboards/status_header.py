"""The two header lines: what is traced, how well, how busy, and what the server has open."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from dashboards.feed import FeedStatus, RunInfo
from dashboards.render import LAYER_ORDER, layer_color, sparkline
from probes.catalog import POINTS_BY_NAME
from tracer.model.units import format_bytes


def coverage_text(coverage: dict[str, str]) -> Text:
    """Attached probe points per layer, e.g. "kernel 9/9 · syscall 4/4 · event loop 1/1"."""
    per_layer: dict[str, list[bool]] = {}
    for name, mechanism in coverage.items():
        point = POINTS_BY_NAME.get(name)
        layer = point.layer.replace("_", " ") if point else "kernel"
        per_layer.setdefault(layer, []).append(mechanism != "absent")
    text = Text()
    parts = [layer for layer in LAYER_ORDER if layer in per_layer]
    for index, layer in enumerate(parts):
        seen = per_layer[layer]
        ok = sum(seen)
        style = layer_color(layer) if ok == len(seen) else "yellow"
        if index:
            text.append(" · ", "grey50")
        text.append(f"{layer} {ok}/{len(seen)}", style)
    return text


@dataclass
class ListState:
    """What the header says about the list: filter, thinning, pause, follow."""

    paused: bool = False
    follow: bool = True
    pending: int = 0  # requests arrived while paused
    filter_text: str = ""
    matched: int = 0  # requests that passed the filter since it was set
    thinning: bool = False  # the list left requests out in the last seconds


def _fit(items: list[tuple[int, Text]], width: int) -> Text:
    """Join the items (priority, text) that fit in `width`, most important first, in order."""
    chosen: set[int] = set()
    used = 0
    for index in sorted(range(len(items)), key=lambda i: items[i][0]):
        size = items[index][1].cell_len
        if used + size <= width or not items[index][0]:  # priority 0: always (then cut)
            chosen.add(index)
            used += size
    line = Text(no_wrap=True, overflow="ellipsis", end="")
    for index, (_, text) in enumerate(items):
        if index in chosen:
            line.append_text(text)
    return line


def _part(text: str, style: str = "") -> Text:
    return Text(text, style=style, end="")


def header_lines(
    info: RunInfo,
    status: FeedStatus,
    rates: list[float],  # requests per complete second, oldest first
    state: ListState,
    total: int = 0,
    width: int = 160,
) -> Text:
    """Two lines, each fitted to `width`: what runs, then how busy, lost, filter, list state.

    What does not fit is left out, least important first (probe coverage, buffers, fds),
    so the request rate, the filter and the pause state are always there.
    """
    first: list[tuple[int, Text]] = [
        (0, _part(" reqtrace ", "bold reverse #5fafff")),
        (0, _part(f" {info.title}", "bold")),
    ]
    if info.address:
        first.append((2, _part(f"  {info.address}")))
    if info.server_pid:
        first.append((3, _part(f"  pid {info.server_pid}", "grey70")))
    if info.runs_as:
        style = "bold red" if info.runs_as == "root" else "grey70"
        first.append((1 if info.runs_as == "root" else 4, _part(f" as {info.runs_as}", style)))
    if info.mode == "attach":
        first.append((1, _part("  attach mode: no parse/app stages (no hooks)", "yellow")))
    elif info.limits:  # a server reqtrace runs but could not hook
        first.append((1, _part("  no hooks: no parse/app stages", "yellow")))
    if status.message:
        first.append((0, _part(f"  {status.message}", "bold yellow")))
    second: list[tuple[int, Text]] = [(9, _part(" "))]
    if info.live:
        rate = rates[-1] if rates else 0.0  # the last complete second
        second.append((3, sparkline(rates, 20 if width >= 120 else 10) + _part(" ")))
        second.append((0, _part(f"{rate:,.0f} req/s", "bold")))
    else:
        second.append((0, _part(f"{total:,} requests", "bold")))
    lost_style = "bold red" if status.lost_records else "grey70"
    second.append((1, _part(f"  lost {status.lost_records:,}", lost_style)))
    if state.filter_text:
        second.append(
            (
                0,
                _part(
                    f"  filter: {state.filter_text} ({state.matched:,} match)",
                    "bold reverse yellow",
                ),
            )
        )
    if state.paused:
        second.append((0, _part(f"  PAUSED (+{state.pending:,} new)", "bold reverse yellow")))
    elif state.follow:
        second.append((5, _part("  following", "grey50")))
    if state.thinning:
        second.append((2, _part("  list: slowest+failed+newest", "yellow")))
    if status.ended and info.live:
        second.append((0, _part("  run ended", "bold yellow")))
    if status.open_fds is not None:
        limit = f"/{status.fd_limit:,}" if status.fd_limit else ""
        second.append((6, _part(f"  fds {status.open_fds:,}{limit}", "grey70")))
    if status.rcvbuf is not None or status.sndbuf is not None:
        buffers = f"  rcvbuf {format_bytes(status.rcvbuf)} sndbuf {format_bytes(status.sndbuf)}"
        second.append((7, _part(buffers, "grey70")))
    if info.coverage:
        second.append((8, _part("  probes ", "grey70") + coverage_text(info.coverage)))
    text = _fit(first, width)
    text.append("\n")
    text.append_text(_fit(second, width))
    return text
