"""What `reqtrace run` is doing while nothing else is on screen: one line per step, on stderr.

Startup (checking, importing the app, the probe plan, compiling or loading, attaching,
serving) and shutdown (stopping the server, requests in flight, detaching) each say what
they do as they begin, so a slow step is never a blank screen. With the dashboard, the
lines appear before it takes the screen and after it gives it back.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        stream = self.stream or sys.stderr
        print(f"reqtrace: {text}", file=stream, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started
