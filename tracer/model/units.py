"""Durations and sizes for people (shared by the CLI output, the report and the dashboard)."""

from __future__ import annotations


def format_duration(ns: float) -> str:
    """A duration: µs below 10 ms, then ms, then s; at most about four digits."""
    us = ns / 1000
    if us < 1:
        return "<1 µs" if ns > 0 else "0 µs"
    if us < 10_000:
        return f"{us:,.0f} µs"
    ms = us / 1000
    if ms < 10_000:
        return f"{ms:,.1f} ms" if ms < 100 else f"{ms:,.0f} ms"
    return f"{ms / 1000:,.1f} s"


def format_bytes(value: int | None) -> str:
    if value is None:
        return "?"
    if value >= 1 << 20:
        return f"{value / (1 << 20):.1f} MiB"
    if value >= 1 << 10:
        return f"{value / (1 << 10):.0f} KiB"
    return f"{value} B"
