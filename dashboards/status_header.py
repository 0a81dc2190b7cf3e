"""The two header lines: what is traced, how well, how busy, and what the server has open."""

from __future__ import annotations

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


def header_lines(
    info: RunInfo,
    status: FeedStatus,
    rates: list[float],
    paused: bool,
    follow: bool,
    pending: int,
    total: int = 0,
) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(" reqtrace ", "bold reverse #5fafff")
    text.append(f" {info.title}", "bold")
    if info.address:
        text.append(f"  {info.address}")
    if info.server_pid:
        text.append(f"  pid {info.server_pid}", "grey70")
    if info.runs_as:
        style = "bold red" if info.runs_as == "root" else "grey70"
        text.append(f" as {info.runs_as}", style)
    if status.message:
        text.append(f"  {status.message}", "bold yellow")
    text.append("\n ")
    if info.coverage:
        text.append("probes ", "grey70")
        text.append_text(coverage_text(info.coverage))
        text.append("  ")
    if info.live:
        # The last complete second (the current one is still filling).
        rate = rates[-2] if len(rates) >= 2 else (rates[-1] if rates else 0.0)
        text.append_text(sparkline(rates, 20))
        text.append(f" {rate:,.0f} req/s", "bold")
    else:
        text.append(f"{total:,} requests", "bold")
    lost_style = "bold red" if status.lost_records else "grey70"
    text.append(f"  lost {status.lost_records:,}", lost_style)
    if status.dropped_for_display:
        text.append(f" (+{status.dropped_for_display:,} not shown)", "yellow")
    if status.open_fds is not None:
        limit = f"/{status.fd_limit:,}" if status.fd_limit else ""
        text.append(f"  fds {status.open_fds:,}{limit}", "grey70")
    if status.rcvbuf is not None or status.sndbuf is not None:
        text.append(
            f"  rcvbuf {format_bytes(status.rcvbuf)} sndbuf {format_bytes(status.sndbuf)}", "grey70"
        )
    if paused:
        text.append(f"  PAUSED (+{pending:,} new)", "bold reverse yellow")
    elif follow:
        text.append("  following", "grey50")
    if status.ended and info.live:
        text.append("  run ended", "bold yellow")
    return text
