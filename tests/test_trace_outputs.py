"""A session's outputs (tracer/session/trace_outputs.py) close whatever else fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tracer.recording.raw_log import RawLogWriter
from tracer.recording.reader import load_recording
from tracer.session.trace_outputs import TraceOutputs


@dataclass
class Settings:
    record: str | None = None
    record_raw: str | None = None
    redact: bool = True
    no_tui: bool = False
    slower_than_ms: float | None = None
    otlp_endpoint: str | None = None
    otlp_service_name: str | None = None
    otlp_resource: dict[str, str] = field(default_factory=dict)


def test_a_failing_raw_file_still_leaves_a_whole_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, raw = tmp_path / "run.jsonl", tmp_path / "run.raw.jsonl"
    outputs = TraceOutputs(Settings(record=str(record), record_raw=str(raw)), 0)
    outputs.correlator(False, {})
    outputs.open({"host": "test"})

    def disk_full(self: RawLogWriter) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RawLogWriter, "close", disk_full)
    with pytest.raises(OSError, match="No space"):
        outputs.close({"recv": 0}, {"stop_reason": "test"})
    recording = load_recording(str(record))
    assert recording.footer is not None and recording.footer["stop_reason"] == "test"
    assert not recording.problems
    outputs.close({}, {})  # once: a second close does nothing
