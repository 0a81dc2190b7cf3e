"""Write a recording: JSON Lines, one request per line, as requests complete.

    with Recorder("trace.jsonl", header={"host": ..., "kernel": ..., "probe_plan": ...}) as rec:
        for trace in traces:
            rec.write(trace)
        rec.close(lost_records={"recv": 0, ...}, extra={"duration_s": 12.5})

Crash safety: every line is handed to the kernel with one write() as soon as its request
completes (no user-space buffer), so a crash loses at most the request in flight; the
footer is then missing and loading says so.

Privacy: recordings hold paths and headers. Files are created mode 0600, and when
reqtrace runs as root under sudo they are given to the invoking user (SUDO_UID/SUDO_GID),
who can then read them without root. Credentials in headers (Authorization, Cookie,
Set-Cookie, Proxy-Authorization) are replaced by "[redacted]" unless redact=False.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import orjson

from tracer.model.trace import SCHEMA, RequestTrace

SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
REDACTED = "[redacted]"


def redact_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The headers with the values of credential-bearing ones replaced."""
    return tuple(
        (name, REDACTED if name.lower() in SENSITIVE_HEADERS else value) for name, value in headers
    )


def redact_head(head: bytes) -> bytes:
    """The first bytes of a request or response as read in the kernel, with the values of
    credential-bearing header lines replaced (a header cut short by the capture too)."""
    lines = head.split(b"\n")
    for index, line in enumerate(lines[1:], 1):
        name, colon, _ = line.partition(b":")
        if colon and name.strip().lower().decode("latin-1") in SENSITIVE_HEADERS:
            ending = b"\r" if line.endswith(b"\r") else b""
            lines[index] = name + b": " + REDACTED.encode() + ending
    return b"\n".join(lines)


def invoking_user() -> tuple[int, int] | None:
    """(uid, gid) of the user who ran `sudo reqtrace ...`, when we are root under sudo."""
    if os.geteuid() != 0:
        return None
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if not (uid.isdigit() and gid.isdigit()):
        return None
    return int(uid), int(gid)


def open_private(path: str) -> int:
    """Create (or truncate) `path` for writing: mode 0600, owned by the invoking user.

    Refuses to follow a symlink: as root, following one could overwrite any file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on O_CREAT: tighten it
        owner = invoking_user()
        if owner is not None:
            os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is taken (a write may be short)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_output(output: str, data: bytes) -> bool:
    """Write a command's output: to stdout for "-" (returns False), else to a new private
    file like a recording (mode 0600, the invoking user's; returns True). Raises OSError."""
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return False
    fd = open_private(output)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    return True


def json_line(obj: Mapping[str, Any]) -> bytes:
    """One JSON Lines line (UTF-8, compact). orjson: ~5x cheaper than json.dumps here."""
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


class Recorder:
    """Appends request traces to a recording file (see the module docstring)."""

    def __init__(self, path: str, header: Mapping[str, Any], redact: bool = True) -> None:
        self.path = path
        self.redact = redact
        self.requests = 0
        self._fd: int | None = open_private(path)
        first: dict[str, Any] = {"type": "header", "schema": SCHEMA}
        first.update({k: v for k, v in header.items() if k not in first})
        first["redacted"] = redact
        write_all(self._fd, json_line(first))

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write(self, trace: RequestTrace) -> None:
        """Append one request line; it is in the file when this returns."""
        self.write_many((trace,))

    def write_many(self, traces: Iterable[RequestTrace]) -> None:
        """Append one line per request with one write(); they are in the file on return."""
        if self._fd is None:
            raise ValueError(f"recording {self.path} is closed")
        redact = self.redact
        lines = []
        for trace in traces:
            line = trace.to_json()
            if redact and trace.headers:
                line["headers"] = [list(pair) for pair in redact_headers(trace.headers)]
            lines.append(json_line(line))
        if lines:
            write_all(self._fd, b"".join(lines))
            self.requests += len(lines)

    def close(
        self,
        lost_records: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the footer (request count, lost records per type) and close the file."""
        if self._fd is None:
            return
        footer: dict[str, Any] = {
            "type": "footer",
            "requests": self.requests,
            "lost_records": dict(lost_records or {}),
        }
        footer.update({k: v for k, v in (extra or {}).items() if k not in footer})
        fd, self._fd = self._fd, None
        try:
            write_all(fd, json_line(footer))
        finally:
            os.close(fd)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
