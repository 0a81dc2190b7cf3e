"""BPF C sources, the shared record header (events.h) and the catalog of probe points."""

from __future__ import annotations

from pathlib import Path

PROBES_DIR = Path(__file__).resolve().parent


def source_path(name: str) -> Path:
    """Path of a BPF C source or header shipped in this package."""
    return PROBES_DIR / name
