"""What the command line says (issue 16): versions, help texts, exit statuses documented and
the same across commands, no doubled prefixes, correct plurals, no escape codes or 80-column
wrapping when the output is not a terminal. Plain subprocesses of `python -m tracer`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tracer.recording.writer import Recorder

from .helpers import ROOT, as_nobody
from .test_trace_model import sample_trace

LONG_PATH = "/api/v1/organisations/acme-widgets-international/projects/42/reports/quarterly-x"


def reqtrace(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m tracer ARGS` with stdout and stderr pipes (never a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "tracer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
        check=False,
    )


def one_request_recording(path: Path) -> Path:
    with Recorder(str(path), {"host": "box", "kernel": "6.18.0", "probe_plan": {}}) as recorder:
        recorder.write(sample_trace(id=1, path=LONG_PATH))
        recorder.close({})
    return path


def test_version_has_a_short_flag() -> None:
    for flag in ("-V", "--version"):
        result = reqtrace(flag)
        assert result.returncode == 0 and result.stdout.startswith("reqtrace "), result


def test_help_documents_the_exit_statuses_and_every_argument() -> None:
    top = reqtrace("--help").stdout
    assert "exit status" in top and "130  interrupted" in top and "2    cannot do it" in top
    run = reqtrace("run", "--help").stdout
    for text in ("--python PATH", "--force", "exit status", 'sudo "$(command -v reqtrace)"'):
        assert text in run, text
    for command in ("show", "report", "export", "explain"):
        assert "a recording made with reqtrace run --record" in reqtrace(command, "--help").stdout
    assert "(default 60)" in reqtrace("demo", "--help").stdout
    assert "(default both)" in " ".join(reqtrace("lab", "up", "--help").stdout.split())
    assert "(default 50)" in reqtrace("lab", "load", "--help").stdout


def test_the_same_app_mistake_exits_1_from_serve() -> None:
    """`run` gives the same (tests/test_run_startup.py, which needs root)."""
    result = reqtrace("serve", "no_such_module_xyz:app", "--port", "0")
    assert result.returncode == 1
    assert 'Error loading ASGI app: could not import module "no_such_module_xyz"' in result.stderr


def test_cannot_trace_is_said_once_without_a_doubled_prefix() -> None:
    result = as_nobody([sys.executable, "-m", "tracer", "run", "tests.server_apps.basic:app"])
    assert result.returncode == 2
    assert "reqtrace: reqtrace" not in result.stderr
    assert "reqtrace: cannot trace here: missing root" in result.stderr


def test_a_report_into_a_pipe_neither_wraps_nor_colours(tmp_path: Path) -> None:
    recording = one_request_recording(tmp_path / "one.jsonl")
    result = reqtrace("report", str(recording))
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    assert LONG_PATH in result.stdout  # on one line, not folded at 80 columns
    assert "Where the time went: 1 request" in result.stdout
    assert "1 requests" not in result.stdout


def test_show_without_a_terminal_prints_the_report_without_escape_codes(tmp_path: Path) -> None:
    recording = one_request_recording(tmp_path / "one.jsonl")
    result = reqtrace("show", str(recording))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "Where the time went: 1 request" in result.stdout
    assert "not a terminal" in result.stderr
