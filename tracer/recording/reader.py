"""Load a recording written by writer.py, keeping every good line.

A recording may be cut short (the process was killed: no footer, maybe half a line) or
damaged. Loading never gives up on the good lines: each bad line becomes a problem
"line N: what is wrong", and only a file that is not a recording at all (unreadable, or
nothing in it parses as one) raises `RecordingError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tracer.model.trace import SCHEMA, RequestTrace

CUT_SHORT = "no footer: the recording was cut short"


class RecordingError(Exception):
    """The file cannot be read as a recording at all; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Recording:
    """A loaded recording: what its lines said, and what was wrong with the bad ones."""

    header: dict[str, Any] | None
    traces: list[RequestTrace]
    footer: dict[str, Any] | None  # None: the run was cut short
    problems: list[str] = field(default_factory=list)  # "line N: ..." per bad line
    path: str = ""

    @property
    def lost_records_by_type(self) -> dict[str, int]:
        """Records the ring buffer lost during the run, per type (from the footer)."""
        lost = (self.footer or {}).get("lost_records")
        if not isinstance(lost, dict):
            return {}
        return {str(k): v for k, v in lost.items() if isinstance(v, int)}

    @property
    def lost_records(self) -> int:
        return sum(self.lost_records_by_type.values())


def load_recording(path: str) -> Recording:
    """Read a recording; bad lines are reported in `problems`, good ones kept."""
    loader = _Loader()
    try:
        with open(path, "rb") as file:
            for number, raw in enumerate(file, 1):
                if raw.strip():
                    loader.line(number, raw)
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
    return loader.result(path)


class _Loader:
    """Sorts the lines of a recording into header, requests, footer and problems."""

    def __init__(self) -> None:
        self.header: dict[str, Any] | None = None
        self.footer: dict[str, Any] | None = None
        self.footer_line = 0
        self.traces: list[RequestTrace] = []
        self.problems: list[str] = []
        self.first_error = ""

    def line(self, number: int, raw: bytes) -> None:
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if not raw.endswith(b"\n"):
                problem = f"line {number}: truncated (the recording was cut short mid-line)"
            else:
                problem = f"line {number}: not valid JSON ({exc})"
            self.problems.append(problem)
            self.first_error = self.first_error or problem
            return
        if not isinstance(obj, dict):
            self.problems.append(f"line {number}: not a JSON object")
            return
        kind = obj.get("type")
        if self.footer is not None and kind != "footer":
            self.problems.append(f"line {number}: data after the footer (line {self.footer_line})")
        if kind == "request":
            try:
                self.traces.append(RequestTrace.from_json(obj))
            except ValueError as exc:
                self.problems.append(f"line {number}: {exc}")
        elif kind == "header":
            self._header(number, obj)
        elif kind == "footer":
            self.footer, self.footer_line = obj, number
        else:
            self.problems.append(f"line {number}: unknown line type {kind!r}")

    def _header(self, number: int, obj: dict[str, Any]) -> None:
        if self.header is not None or self.traces:
            self.problems.append(f"line {number}: a second header (ignored)")
            return
        self.header = obj
        if obj.get("schema") != SCHEMA:
            self.problems.append(
                f"line {number}: schema {obj.get('schema')!r} is not {SCHEMA!r}; reading it anyway"
            )

    def result(self, path: str) -> Recording:
        problems, traces, footer = self.problems, self.traces, self.footer
        if self.header is None and not traces:
            reason = self.first_error or (problems[0] if problems else "the file is empty")
            raise RecordingError(f"{path} is not a reqtrace recording ({reason})")
        if self.header is None:
            problems.insert(0, "line 1: no header line (host, kernel and probe plan unknown)")
        if footer is None:
            problems.append(CUT_SHORT)
        elif isinstance(footer.get("requests"), int) and footer["requests"] != len(traces):
            problems.append(
                f"line {self.footer_line}: the footer counts {footer['requests']} requests,"
                f" {len(traces)} were loaded"
            )
        return Recording(self.header, traces, footer, problems, path)
