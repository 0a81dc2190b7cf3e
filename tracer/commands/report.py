"""`reqtrace report FILE [--json | --html] [-o OUT]`: load a recording, show its per-stage
breakdown: rich tables on the terminal, the documented JSON, or one self-contained HTML page
(tracer/recording/html_report.py) to attach to a ticket.

OUT is written like an export (mode 0600, owned by the invoking user under sudo): a report
names the recording's paths and holders. "-" (the default) is standard output.
"""

from __future__ import annotations

import argparse
import io
import json
import sys

from rich.console import Console

from tracer.recording.reader import RecordingError, load_recording
from tracer.recording.report import build_report, render_report
from tracer.recording.writer import write_output

# Not a terminal: tables as wide as their content (long paths stay on one line).
TEXT_WIDTH = 400


def run_report(
    path: str,
    as_json: bool,
    by: str | None = None,
    path_glob: str | None = None,
    slower_than_ms: float | None = None,
    html: bool = False,
    output: str = "-",
) -> int:
    """The `reqtrace report` command; returns the exit code."""
    try:
        recording = load_recording(path)
    except RecordingError as exc:
        print(f"reqtrace report: {exc}", file=sys.stderr)
        return 2
    if html:
        from tracer.recording.html_report import build_html

        text = build_html(recording, by=by, path=path_glob, slower_than_ms=slower_than_ms)
    else:
        report = build_report(recording, by, path_glob, slower_than_ms)
        if as_json:
            text = json.dumps(report, indent=2) + "\n"
        elif output == "-" and sys.stdout.isatty():
            render_report(report, Console())
            return 0
        else:  # a file, or a pipe: no escape codes, and no wrapping at 80 columns
            buffer = io.StringIO()
            render_report(report, Console(file=buffer, width=TEXT_WIDTH, color_system=None))
            text = buffer.getvalue()
    if as_json or html:
        for problem in recording.problems:
            print(f"reqtrace report: warning: {problem}", file=sys.stderr)
    try:
        if not write_output(output, text.encode()):
            return 0
    except OSError as exc:
        print(f"reqtrace report: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    kind = "HTML report" if html else "report"
    print(f"reqtrace report: wrote the {kind} of {path} to {output}", file=sys.stderr)
    return 0


def report_command(args: argparse.Namespace) -> int:
    return run_report(
        args.file,
        args.json,
        args.by,
        args.path,
        args.slower_than,
        html=args.html,
        output=args.output,
    )
