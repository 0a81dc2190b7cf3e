"""`reqtrace report FILE [--json]`: load a recording, print its per-stage breakdown."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

from tracer.recording.reader import RecordingError, load_recording
from tracer.recording.report import build_report, render_report


def run_report(
    path: str,
    as_json: bool,
    by: str | None = None,
    path_glob: str | None = None,
    slower_than_ms: float | None = None,
) -> int:
    """The `reqtrace report` command; returns the exit code."""
    try:
        recording = load_recording(path)
    except RecordingError as exc:
        print(f"reqtrace report: {exc}", file=sys.stderr)
        return 1
    report = build_report(recording, by, path_glob, slower_than_ms)
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        for problem in recording.problems:
            print(f"reqtrace report: warning: {problem}", file=sys.stderr)
    else:
        render_report(report, Console())
    return 0


def report_command(args: argparse.Namespace) -> int:
    return run_report(args.file, args.json, args.by, args.path, args.slower_than)
