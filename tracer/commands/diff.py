"""`reqtrace diff A B [--by path] [--json]`: which stage moved between two recordings."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

from tracer.recording.diff import MOVED, diff_recordings, render_diff
from tracer.recording.reader import RecordingError, load_recording


def run_diff(
    path_a: str,
    path_b: str,
    by: str | None = None,
    as_json: bool = False,
    path_glob: str | None = None,
    alpha: float = 0.01,
    min_change_pct: float = 10.0,
    min_change_us: float = 20.0,
    exit_code: bool = False,
) -> int:
    """The `reqtrace diff` command; returns the exit code (1 with `exit_code` when some
    stage moved, 2 when a recording cannot be read)."""
    try:
        recording_a = load_recording(path_a)
        recording_b = load_recording(path_b)
    except RecordingError as exc:
        print(f"reqtrace diff: {exc}", file=sys.stderr)
        return 2
    diff = diff_recordings(
        recording_a, recording_b, by, path_glob, alpha, min_change_pct, min_change_us
    )
    if as_json:
        json.dump(diff, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        render_diff(diff, Console())
    moved = any(
        row["verdict"] in MOVED
        for group in diff["groups"].values()
        for row in group["stages"].values()
    )
    return 1 if exit_code and moved else 0


def diff_command(args: argparse.Namespace) -> int:
    return run_diff(
        args.a,
        args.b,
        args.by,
        args.json,
        args.path,
        args.alpha,
        args.min_change,
        args.min_us,
        args.exit_code,
    )
