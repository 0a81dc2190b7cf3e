"""`reqtrace show FILE`: the dashboard on a recording (same code as the live dashboard)."""

from __future__ import annotations

import sys

from dashboards.feed import FeedStatus, RecordingFeed, RunInfo
from tracer.recording.reader import Recording, RecordingError, load_recording


def recording_feed(recording: Recording) -> RecordingFeed:
    header = recording.header or {}
    footer = recording.footer or {}
    problems = list(recording.problems)
    if recording.footer is None:
        problems.append("no footer: the recording was cut short (the good lines are shown)")
    info = RunInfo(
        title=f"recording {recording.path}",
        address=str(header.get("address", "")),
        server_pid=int(header.get("server_pid", 0) or 0),
        runs_as=str(header.get("runs_as", "")),
        coverage=dict(header.get("coverage") or {}),
        clock_offset_ns=header.get("clock_offset_ns"),
        live=False,
        recording_path=recording.path,
        header={k: v for k, v in header.items() if k not in ("type", "schema")},
        mode=str(header.get("mode", "")),
        limits=str(header.get("unavailable", "")),
    )
    lost = footer.get("lost_records") or {}
    status = FeedStatus(
        lost_records=sum(lost.values()) if isinstance(lost, dict) else int(lost or 0),
        problems=problems,
    )
    return RecordingFeed(info, recording.traces, status)


def run_show(path: str) -> int:
    try:
        recording = load_recording(path)
    except RecordingError as exc:
        print(f"reqtrace: {exc}", file=sys.stderr)
        return 1
    if not recording.traces and recording.problems:
        print(f"reqtrace: {path} has no readable request lines:", file=sys.stderr)
        for problem in recording.problems[:10]:
            print(f"  {problem}", file=sys.stderr)
        return 1
    from dashboards.app import ReqtraceApp

    ReqtraceApp(recording_feed(recording)).run()
    return 0
