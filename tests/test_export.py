"""`reqtrace export`: Perfetto trace-event JSON that satisfies the format's rules, and the
plain JSON document."""

from __future__ import annotations

import json
import stat
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tracer.commands.export import run_export
from tracer.correlate.correlator import Correlator
from tracer.correlate.synthetic import MS, Scenario, arrival_order
from tracer.recording.writer import Recorder

from .helpers import record_correlated

HEADER = {"host": "box", "kernel": "6.18.0", "probe_plan": {}}
PHASES = {"X", "M", "s", "t", "f"}


def recorded_run(path: Path, requests: int = 6) -> None:
    scenario = Scenario()
    for c in range(2):
        connection = scenario.connect(1_000 * MS + c * MS, 50_000 + c, fd=7 + c)
        for i in range(requests // 2):
            connection.request(1_010 * MS + i * 2 * MS + c * 200_000, dev=("lo", "eth0")[i % 2])
    record_correlated(arrival_order(scenario.records), path, HEADER)


def validate_trace_events(document: dict[str, Any]) -> None:
    """The trace-event format's required fields, and what Perfetto needs to draw it."""
    events = document["traceEvents"]
    assert isinstance(events, list) and events
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    flows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        assert event["ph"] in PHASES
        assert isinstance(event["name"], str) and isinstance(event["pid"], int)
        if event["ph"] == "M":
            assert event["name"] in {
                "process_name",
                "process_sort_index",
                "thread_name",
                "thread_sort_index",
            }
            assert isinstance(event["args"], dict) and event["args"]
            continue
        assert isinstance(event["tid"], int)
        assert isinstance(event["ts"], int | float) and event["ts"] >= 0
        if event["ph"] == "X":
            assert isinstance(event["dur"], int | float) and event["dur"] >= 0
            tracks[(event["pid"], event["tid"])].append((event["ts"], event["ts"] + event["dur"]))
        else:
            assert "id" in event and "cat" in event
            flows[event["id"]].append(event)
    for slices in tracks.values():  # slices on one track nest or follow each other
        open_ends: list[float] = []
        for start, end in sorted(slices, key=lambda s: (s[0], -s[1])):
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1], "crossing slices on one track"
            open_ends.append(end)
    for steps in flows.values():  # each flow: one start, one finish, in time order
        phases = [e["ph"] for e in steps]
        assert phases[0] == "s" and phases[-1] == "f" and phases.count("s") == 1
        assert [e["ts"] for e in steps] == sorted(e["ts"] for e in steps)
        for step in steps:  # each flow event sits inside a slice of its track
            inside = [s for s in tracks[(step["pid"], step["tid"])] if s[0] <= step["ts"] <= s[1]]
            assert inside, step


def test_perfetto_export_is_valid_trace_event_json(tmp_path: Path) -> None:
    recording, out = tmp_path / "run.jsonl", tmp_path / "run.perfetto.json"
    recorded_run(recording)

    assert run_export(str(recording), "perfetto", str(out)) == 0

    document = json.loads(out.read_text())
    validate_trace_events(document)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    events = document["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and "name" in e["args"]}
    assert {"requests", "CPUs", "server (pid 4242)", "CPU 0", "CPU 1", "thread 4243"} <= names
    requests = [e for e in events if e["ph"] == "X" and e["cat"] == "request"]
    assert len(requests) == 6
    assert requests[0]["dur"] == 133.0  # µs
    assert {e["id"] for e in events if e["ph"] == "s"} == {1, 2, 3, 4, 5, 6}
    finishes = [e for e in events if e["ph"] == "f"]
    assert all(e["bp"] == "e" for e in finishes)
    assert document["otherData"]["skipped_slices"] == 0


def test_overlapping_work_on_one_track_is_left_out_not_drawn_crossing(tmp_path: Path) -> None:
    recording, out = tmp_path / "run.jsonl", tmp_path / "out.json"
    scenario = Scenario()
    a = scenario.connect(1_000 * MS, 50_000, fd=7)
    b = scenario.connect(1_000 * MS, 50_001, fd=8)
    a.request(1_001 * MS)
    b.request(1_001 * MS + 4_000)  # 4 µs later: its kernel work crosses a's on CPU 0
    correlator = Correlator()
    with Recorder(str(recording), HEADER) as recorder:
        for record in scenario.time_ordered():
            for trace in correlator.feed(record):
                recorder.write(trace)
        for trace in correlator.flush():
            recorder.write(trace)

    assert run_export(str(recording), "perfetto", str(out)) == 0

    document = json.loads(out.read_text())
    validate_trace_events(document)
    assert document["otherData"]["skipped_slices"] > 0


def test_plain_json_export_is_one_document(tmp_path: Path) -> None:
    recording, out = tmp_path / "run.jsonl", tmp_path / "run.json"
    recorded_run(recording, requests=4)

    assert run_export(str(recording), "json", str(out)) == 0

    document = json.loads(out.read_text())
    assert document["schema"] == "reqtrace.trace/1"
    assert document["header"]["host"] == "box"
    assert [r["id"] for r in document["requests"]] == [1, 2, 3, 4]
    assert document["footer"]["requests"] == 4
    assert document["problems"] == []


def test_export_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recording = tmp_path / "run.jsonl"
    recorded_run(recording, requests=2)
    assert run_export(str(recording), "json", "-") == 0
    assert len(json.loads(capsys.readouterr().out)["requests"]) == 2


@pytest.mark.parametrize(
    ("fmt", "exists", "code", "message"),
    [
        ("svg", True, 2, "unknown format 'svg'"),
        ("perfetto", False, 2, "cannot read"),
    ],
)
def test_export_errors_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    exists: bool,
    code: int,
    message: str,
) -> None:
    recording = tmp_path / "run.jsonl"
    if exists:
        recorded_run(recording, requests=2)
    assert run_export(str(recording), fmt, str(tmp_path / "out.json")) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out.json").exists()


def test_a_request_that_held_the_loop_points_at_the_requests_that_waited(tmp_path: Path) -> None:
    """Loop blame becomes a flow arrow: from the holder's track into the waiting stage."""
    from tracer.model.trace import Blame, RequestTrace, Stage

    def trace(trace_id: int, path: str, stages: tuple[Stage, ...], **more: Any) -> RequestTrace:
        start, end = stages[0].start_ns, stages[-1].end_ns
        return RequestTrace(
            trace_id, 100, 9, trace_id, 1, "GET", path, 200, ("127.0.0.1", 5000 + trace_id),
            ("127.0.0.1", 8000), start, end, True, stages, tid=101, **more,
        )  # fmt: skip

    burn = trace(1, "/burn", (Stage("app", "app", 1_000_000, 6_000_000),))
    wait = Stage("loop_busy", "event loop", 2_000_000, 6_050_000)
    waiter = trace(
        2,
        "/hello",
        (wait, Stage("recv", "syscall", 6_050_000, 6_060_000)),
        blame=(
            Blame("loop_busy", 1, "GET", "/burn", 4_000_000),
            Blame("loop_busy", 0, "", "", 50_000),
        ),
    )
    recording, out = tmp_path / "held.jsonl", tmp_path / "held.perfetto.json"
    with Recorder(str(recording), HEADER) as recorder:
        recorder.write(burn)
        recorder.write(waiter)
        recorder.close({})

    assert run_export(str(recording), "perfetto", str(out)) == 0

    document = json.loads(out.read_text())
    validate_trace_events(document)
    arrows = [e for e in document["traceEvents"] if e.get("name") == "held the loop"]
    assert [(e["ph"], e["tid"]) for e in arrows] == [("s", 1), ("f", 2)]
    stage = next(e for e in document["traceEvents"] if e.get("name") == "loop_busy")
    assert stage["args"]["loop_held_by"] == ["GET /burn (#1) 4000.0 µs", "other 50.0 µs"]
