"""Small helpers shared by tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534


def as_nobody(
    argv: Sequence[str], timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command as the unprivileged user nobody, with no capabilities."""
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--inh-caps=-all",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
        env={**os.environ, "HOME": "/tmp", "PYTHONPATH": str(ROOT), **(env or {})},
    )


def record_correlated(records: Iterable[Any], path: Path, header: dict[str, Any]) -> Path:
    """Correlate records (in the order given) into a recording at `path`, footer included."""
    from tracer.correlate.correlator import Correlator
    from tracer.recording.writer import Recorder

    correlator = Correlator()
    with Recorder(str(path), header) as recorder:
        for record in records:
            recorder.write_many(correlator.feed(record))
        recorder.write_many(correlator.flush())
        recorder.close({"recv": 0})
    return path
