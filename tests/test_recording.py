"""Recording: JSON Lines written as requests complete, private files, redaction, and
loading that keeps the good lines of a cut-short or damaged file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tracer.model.trace import SCHEMA
from tracer.recording.reader import CUT_SHORT, RecordingError, load_recording
from tracer.recording.writer import REDACTED, Recorder, open_private

from .test_trace_model import sample_trace

HEADER = {"host": "box", "kernel": "6.18.0", "probe_plan": {"tcp receive": "tracepoint"}}


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_header_one_line_per_request_then_footer(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with Recorder(str(path), HEADER) as recorder:
        recorder.write(sample_trace(id=1))
        assert len(read_lines(path)) == 2  # on disk as soon as write() returns
        recorder.write(sample_trace(id=2))
        recorder.close({"recv": 3, "send": 0}, {"duration_s": 1.5})

    header, first, second, footer = read_lines(path)
    assert header == {"type": "header", "schema": SCHEMA, **HEADER, "redacted": True}
    assert (first["type"], first["id"], second["id"]) == ("request", 1, 2)
    assert footer == {
        "type": "footer",
        "requests": 2,
        "lost_records": {"recv": 3, "send": 0},
        "duration_s": 1.5,
    }


def test_recordings_are_private_files(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text("old")
    path.chmod(0o644)
    Recorder(str(path), HEADER).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_lines(path)[0]["type"] == "header"  # truncated, not appended


def test_under_sudo_the_file_goes_to_the_invoking_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chowned: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "fchown", lambda fd, uid, gid: chowned.append((uid, gid)))
    monkeypatch.setenv("SUDO_UID", "1000")
    monkeypatch.setenv("SUDO_GID", "1001")
    os.close(open_private(str(tmp_path / "a")))
    monkeypatch.delenv("SUDO_UID")
    os.close(open_private(str(tmp_path / "b")))  # root without sudo: stays root's
    assert chowned == [(1000, 1001)]


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OSError):
        Recorder(str(tmp_path / "link"), HEADER)
    assert target.read_text() == "keep me"


def test_credentials_in_headers_are_redacted_unless_asked(tmp_path: Path) -> None:
    headers = (
        ("Authorization", "Bearer secret"),
        ("cookie", "sid=1"),
        ("Set-Cookie", "x"),
        ("proxy-authorization", "Basic y"),
        ("user-agent", "curl"),
    )
    redacted, kept = tmp_path / "r.jsonl", tmp_path / "k.jsonl"
    with Recorder(str(redacted), HEADER) as recorder:
        recorder.write(sample_trace(headers=headers))
    with Recorder(str(kept), HEADER, redact=False) as recorder:
        recorder.write(sample_trace(headers=headers))

    values = dict(read_lines(redacted)[1]["headers"])  # type: ignore[arg-type]
    assert values == {
        "Authorization": REDACTED,
        "cookie": REDACTED,
        "Set-Cookie": REDACTED,
        "proxy-authorization": REDACTED,
        "user-agent": "curl",
    }
    assert "secret" not in redacted.read_text()
    assert dict(read_lines(kept)[1]["headers"])["Authorization"] == "Bearer secret"  # type: ignore[arg-type]


def test_a_complete_recording_loads_without_problems(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    traces = [sample_trace(id=i) for i in range(1, 4)]
    with Recorder(str(path), HEADER, redact=False) as recorder:
        for trace in traces:
            recorder.write(trace)
        recorder.close({"recv": 2, "drop": 1})

    recording = load_recording(str(path))
    assert recording.traces == traces
    assert recording.problems == []
    assert recording.header is not None and recording.header["kernel"] == "6.18.0"
    assert recording.lost_records == 3
    assert recording.lost_records_by_type == {"recv": 2, "drop": 1}


def test_a_crash_mid_line_keeps_every_complete_request(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with Recorder(str(path), HEADER) as recorder:
        recorder.write(sample_trace(id=1))
        recorder.write(sample_trace(id=2))
        text = path.read_text()
    cut = text + json.dumps(sample_trace(id=3).to_json())[:40]  # half a line, no footer
    path.write_text(cut)

    recording = load_recording(str(path))
    assert [t.id for t in recording.traces] == [1, 2]
    assert recording.footer is None
    assert recording.problems == [
        "line 4: truncated (the recording was cut short mid-line)",
        CUT_SHORT,
    ]


def test_corrupt_lines_are_named_and_the_good_ones_kept(tmp_path: Path) -> None:
    good = [json.dumps(sample_trace(id=i).to_json()) for i in (1, 2)]
    broken = json.dumps({**sample_trace(id=9).to_json(), "stages": "oops"})
    lines = [
        json.dumps({"type": "header", "schema": SCHEMA}),
        good[0],
        "{not json",
        broken,
        json.dumps({"type": "mystery"}),
        good[1],
        json.dumps({"type": "footer", "requests": 2, "lost_records": {}}),
    ]
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(lines) + "\n")

    recording = load_recording(str(path))
    assert [t.id for t in recording.traces] == [1, 2]
    assert recording.problems[0].startswith("line 3: not valid JSON")
    assert recording.problems[1] == "line 4: stages and notes must be lists"
    assert recording.problems[2] == "line 5: unknown line type 'mystery'"
    assert len(recording.problems) == 3


def test_a_missing_header_or_a_foreign_schema_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text(json.dumps(sample_trace().to_json()) + "\n")
    recording = load_recording(str(path))
    assert recording.problems[0].startswith("line 1: no header line")
    assert len(recording.traces) == 1

    path.write_text(json.dumps({"type": "header", "schema": "other/9"}) + "\n")
    assert "schema 'other/9' is not" in load_recording(str(path)).problems[0]


@pytest.mark.parametrize("content", ["", "hello\nworld\n", "[1, 2]\n"])
def test_a_file_that_is_not_a_recording_raises(tmp_path: Path, content: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(content)
    with pytest.raises(RecordingError, match="is not a reqtrace recording"):
        load_recording(str(path))


def test_an_unreadable_file_raises_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"cannot read .*missing\.jsonl: No such file"):
        load_recording(str(tmp_path / "missing.jsonl"))
