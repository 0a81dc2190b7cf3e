"""The lab's files under /run/reqtrace-lab: what `lab up` built, and the forwarder's counters.

/run is a tmpfs, so a reboot (which also removes namespaces and veths) removes these too.
The state file lets `lab status` describe a lab and `lab down` find the forwarder; teardown
never depends on it alone (see names.py).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_DIR = Path(os.environ.get("REQTRACE_LAB_STATE_DIR", "/run/reqtrace-lab"))


@dataclass
class LabState:
    """What `lab up` built; written once the lab works, read by status and down."""

    prefix: str
    subnet: str
    server_addr: str
    client_addr: str
    mode: str  # "direct" (one veth pair) or "delay-line" (router namespace + forwarder)
    impairment: dict[str, Any]
    mechanisms: list[str]
    forwarder_pid: int | None = None
    created_at: float = 0.0
    devices: list[str] = field(default_factory=list)


def state_path(prefix: str) -> Path:
    return STATE_DIR / f"{prefix}.json"


def counters_path(prefix: str) -> Path:
    """The delay line's counters, rewritten by the forwarder a few times a second."""
    return STATE_DIR / f"{prefix}.counters.json"


def log_path(prefix: str) -> Path:
    """The delay line's log (start, stop, errors)."""
    return STATE_DIR / f"{prefix}.log"


def write_json_atomically(path: Path, data: object) -> None:
    """Write then rename, so a reader never sees half a file (the forwarder may be killed)."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(temporary, path)


def save_state(state: LabState) -> None:
    write_json_atomically(state_path(state.prefix), asdict(state))


def load_state(prefix: str) -> LabState | None:
    """The saved state, or None when there is none or it cannot be read."""
    try:
        raw = json.loads(state_path(prefix).read_text())
        return LabState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def read_counters(prefix: str) -> dict[str, Any] | None:
    """The forwarder's latest counters, or None when no delay line has written any."""
    try:
        data = json.loads(counters_path(prefix).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_files(prefix: str) -> list[str]:
    """Delete the lab's files; returns the paths removed."""
    removed = []
    for path in (state_path(prefix), counters_path(prefix), log_path(prefix)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(str(path))
    return removed
