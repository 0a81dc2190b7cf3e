"""`reqtrace report`: per-stage percentiles, slowest requests, lost records; rich for
people, the documented JSON for machines; one clear line when the file is unusable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from tracer.commands.report import run_report
from tracer.correlate.synthetic import MS, Scenario, arrival_order
from tracer.model.trace import Stage
from tracer.recording.reader import load_recording
from tracer.recording.report import build_report, percentile, render_report
from tracer.recording.writer import Recorder

from .helpers import record_correlated
from .test_trace_model import sample_trace

HEADER = {"host": "box", "kernel": "6.18.0", "probe_plan": {}}


def write_recording(path: Path, app_durations_us: list[int], lost: dict[str, int] | None) -> None:
    with Recorder(str(path), HEADER) as recorder:
        for i, app_us in enumerate(app_durations_us, 1):
            start = i * 10_000_000
            stages = (
                Stage("recv", "syscall", start, start + 1_000),
                Stage("app", "app", start + 2_000, start + 2_000 + app_us * 1000),
            )
            recorder.write(
                sample_trace(id=i, start_ns=start, end_ns=stages[-1].end_ns + 500, stages=stages)
            )
        recorder.close(lost or {})
    if lost is None:  # as if the run crashed: no footer
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:-1]))


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([7], 99) == 7
    assert percentile([1, 2, 3, 4], 50) == 2
    with pytest.raises(ValueError):
        percentile([], 50)


def test_the_report_json_has_the_design_shape_and_the_right_numbers(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_recording(path, list(range(1, 101)), {"recv": 4, "send": 1})

    report = build_report(load_recording(str(path)))

    assert report["requests"] == 100
    assert report["lost_records"] == 5
    assert list(report["stages"]) == ["recv", "app"]
    assert report["stages"]["app"] == {
        "count": 100,
        "p50_us": 50.0,
        "p90_us": 90.0,
        "p99_us": 99.0,
        "max_us": 100.0,
    }
    assert report["stages"]["recv"]["p99_us"] == 1.0
    # total = recv start -> app end + 0.5 µs: app + 2.5 µs
    assert report["total"]["max_us"] == 102.5
    assert report["slowest"][0] == {
        "id": 100,
        "method": "POST",
        "path": "/upload",
        "status": 201,
        "total_us": 102.5,
        "dominant_stage": "app",
        "dominant_us": 100.0,
        "complete": True,
    }
    assert len(report["slowest"]) == 10
    assert report["cut_short"] is False and report["problems"] == []


def test_run_report_json_goes_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.jsonl"
    write_recording(path, [5, 10], lost=None)  # no footer: cut short

    assert run_report(str(path), as_json=True) == 0

    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["requests"] == 2 and report["cut_short"] is True
    assert "no footer: the recording was cut short" in captured.err


def test_the_rich_report_shows_stages_slowest_and_lost_records(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    write_recording(path, [5, 1500, 20], {"recv": 2})
    console = Console(width=120, record=True, color_system=None)

    render_report(build_report(load_recording(str(path))), console)

    text = console.export_text()
    assert "Where the time went: 3 requests" in text
    assert "app" in text and "1.50 ms" in text  # the 1500 µs app stage, shown in ms
    assert "Slowest requests" in text and "app (1.50 ms, 100%)" in text
    assert "lost records: 2 (recv 2)" in text


@pytest.mark.parametrize("content", [None, "garbage\n"])
def test_an_unusable_file_is_one_line_on_stderr_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None
) -> None:
    path = tmp_path / "run.jsonl"
    if content is not None:
        path.write_text(content)

    assert run_report(str(path), as_json=False) == 2  # cannot do it (reqtrace --help)

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("reqtrace report: ")
    assert "Traceback" not in captured.err


def test_round_trip_from_correlator_to_report(tmp_path: Path) -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    for i in range(20):
        connection.request(1_001 * MS + i * 2 * MS, dev="eth0" if i % 2 else "lo")
    path = record_correlated(arrival_order(scenario.records), tmp_path / "run.jsonl", HEADER)

    report = build_report(load_recording(str(path)))

    assert report["requests"] == 20 and report["complete"] == 20
    assert report["stages"]["nic_irq"]["count"] == 10
    assert report["stages"]["backlog"]["count"] == 10
    assert report["stages"]["recv"]["count"] == 20
    assert report["total"]["p50_us"] == 133.0


def _mixed_routes_recording(tmp_path: Path) -> Path:
    """/fast (40 µs in the app), /users/N (2 ms) and /slow (20 ms), interleaved."""
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    plan = [("/fast", 40_000), ("/users/17", 2 * MS), ("/slow", 20 * MS), ("/users/42", 2 * MS)]
    at = 1_001 * MS
    for i in range(40):
        path, app_time = plan[i % len(plan)]
        connection.request(at, path=path, app_time=app_time)
        at += app_time + 3 * MS
    return record_correlated(arrival_order(scenario.records), tmp_path / "mixed.jsonl", HEADER)


def test_report_by_path_gives_each_route_its_own_percentiles(tmp_path: Path) -> None:
    recording = load_recording(str(_mixed_routes_recording(tmp_path)))

    by_path = build_report(recording, by="path")["groups"]
    assert set(by_path) == {"/fast", "/users/17", "/slow", "/users/42"}
    assert by_path["/slow"]["requests"] == 10
    assert by_path["/slow"]["stages"]["app"]["p50_us"] == 20_000.0
    assert by_path["/fast"]["stages"]["app"]["p99_us"] == 40.0
    by_route = build_report(recording, by="route")["groups"]
    assert by_route["/users/{id}"]["requests"] == 20
    assert by_route["/users/{id}"]["stages"]["app"]["max_us"] == 2_000.0
    by_status = build_report(recording, by="status")["groups"]
    assert list(by_status) == ["200"] and by_status["200"]["requests"] == 40


def test_report_filters_by_path_glob_and_duration(tmp_path: Path) -> None:
    recording = load_recording(str(_mixed_routes_recording(tmp_path)))

    users = build_report(recording, path="/users/*")
    assert users["requests"] == 20 and users["recorded_requests"] == 40
    slow = build_report(recording, slower_than_ms=10)
    assert slow["requests"] == 10 and set(slow["stages"]["app"]) >= {"p50_us"}
    assert slow["filters"] == {"path": None, "slower_than_ms": 10, "by": None}


def test_report_cli_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tracer.cli import main

    path = _mixed_routes_recording(tmp_path)
    assert main(["report", str(path), "--json", "--by", "route", "--slower-than", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["groups"]) == {"/users/{id}", "/slow"}
    assert main(["report", str(path), "--by", "path", "--path", "/slow"]) == 0
    text = capsys.readouterr().out
    assert "path /slow: 10 requests" in text and "/fast" not in text
