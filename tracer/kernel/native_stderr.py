"""Capture what C libraries (libbcc, libbpf, clang) write straight to file descriptor 2.

BCC's compiler and loader print warnings, verifier logs and attach errors on the process's
stderr, below Python. Left alone they tear through a Textual screen and bury the one
sentence a user needs. Wrap BCC calls in `captured_native_stderr()` and decide what, if
anything, to show.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

_lock = threading.Lock()


class CapturedText:
    """Filled in when the `with` block ends."""

    def __init__(self) -> None:
        self.text = ""

    def last_line(self) -> str:
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def lines_matching(self, *needles: str) -> list[str]:
        return [
            line.strip()
            for line in self.text.splitlines()
            if any(needle in line for needle in needles)
        ]


@contextlib.contextmanager
def captured_native_stderr() -> Iterator[CapturedText]:
    captured = CapturedText()
    with _lock, tempfile.TemporaryFile(mode="w+b") as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")
