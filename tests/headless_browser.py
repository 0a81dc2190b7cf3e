"""Open a local page in headless Chromium and report what the browser saw (a test helper).

Talks the Chrome DevTools Protocol over `--remote-debugging-pipe` (JSON messages ended by
NUL on the browser's fds 3 and 4), so no websocket client or driver package is needed. For
one page it collects:

- every network request the page made (Network.requestWillBeSent), the page's own file://
  URL included, and every request that failed;
- console messages, uncaught exceptions and browser log entries (a resource that failed to
  load is logged there as an error);
- values of JavaScript expressions evaluated in the loaded page (DOM queries), and a PNG
  screenshot of the whole page.

Page scripts can be switched off (Emulation.setScriptExecutionDisabled): our own DOM queries
still run, the page's `<script>`s do not. DNS is mapped to nothing, so a page that tries the
network fails fast instead of reaching it.

Chromium comes from Debian's `chromium` package (scripts/setup installs it). Run tests that
use this under `flock /tmp/reqtrace-heavy.lock` (a browser is heavy on a 2-core machine).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TIMEOUT_S = 60.0


def chromium_or_skip() -> str:
    """The chromium binary; a missing one skips the test (fails it under CI's
    REQTRACE_REQUIRE_BPF=1, where scripts/setup must have installed it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "chromium is not installed (scripts/setup installs Debian's chromium package)"
    if os.environ.get("REQTRACE_REQUIRE_BPF") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class PageVisit:
    """What the browser saw while loading one page."""

    url: str
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    exceptions: list[str] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    values: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries."""
        out = [text for level, text in self.console if level in ("error", "assert")]
        out += self.exceptions
        out += [text for level, text in self.log if level == "error"]
        return out

    @property
    def other_requests(self) -> list[str]:
        """Requests other than for the page itself."""
        return [url for url in self.requests if url != self.url]


class Browser:
    """One headless Chromium, driven over the DevTools pipe; use as a context manager."""

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.TemporaryDirectory(prefix="reqtrace-chromium-")
        self.stderr = open(Path(self.profile.name) / "stderr.log", "wb")  # noqa: SIM115
        # fd 3 <- our stdin pipe (commands), fd 4 -> our stdout pipe (replies and events)
        argv = [
            binary,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile.name}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            ["sh", "-c", 'exec 3<&0 4>&1 0</dev/null 1>/dev/null; exec "$@"', "sh", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        self.pending: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(AssertionError, OSError):
                self.call("Browser.close", timeout=10)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()
        self.profile.cleanup()

    def _read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        while chunk := self.process.stdout.read1(65536):
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for raw in complete:
                self.messages.put(json.loads(raw))

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> int:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\0")
        self.process.stdin.flush()
        return self.next_id

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str = "",
        timeout: float = TIMEOUT_S,
    ) -> dict[str, Any]:
        """Send a command and wait for its reply; events meanwhile are kept in `pending`."""
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline, method)
            if message.get("id") == wanted:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.pending.append(message)

    def _next(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                tail = self._stderr_tail()
                raise AssertionError(f"chromium: no answer to {waiting_for} ({tail})")
            try:
                return self.messages.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue

    def _stderr_tail(self) -> str:
        self.stderr.flush()
        text = (Path(self.profile.name) / "stderr.log").read_text(errors="replace")
        return text[-2000:] or "nothing on stderr"

    def visit(
        self,
        path: Path,
        expressions: dict[str, str] | None = None,
        scripts: bool = True,
        width: int = 1280,
        height: int = 900,
        clip: tuple[int, int, int, int] | None = None,
    ) -> PageVisit:
        """Load a local file in a fresh tab; evaluate `expressions` (name -> JS) once loaded;
        take a screenshot of the whole page, or of `clip` (x, y, width, height) of it."""
        url = path.resolve().as_uri()
        visit = PageVisit(url)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.call("Emulation.setDeviceMetricsOverride", metrics, session=session)
        if not scripts:
            self.call("Emulation.setScriptExecutionDisabled", {"value": True}, session=session)
        self.pending.clear()
        self.send("Page.navigate", {"url": url}, session)
        deadline = time.monotonic() + TIMEOUT_S
        loaded = False
        while not loaded:
            message = self.pending.pop(0) if self.pending else self._next(deadline, "load")
            loaded = message.get("method") == "Page.loadEventFired"
            self._note(visit, message)
        # let late console messages and log entries arrive
        self.call("Runtime.evaluate", {"expression": "1"}, session=session)
        for name, expression in (expressions or {}).items():
            reply = self.call(
                "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
            )
            if "exceptionDetails" in reply:
                raise AssertionError(f"{name}: {reply['exceptionDetails']}")
            visit.values[name] = reply["result"].get("value")
        capture: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip is not None:
            x, y, w, h = clip
            capture["clip"] = {"x": x, "y": y, "width": w, "height": h, "scale": 1}
        shot = self.call("Page.captureScreenshot", capture, session=session)
        visit.screenshot = base64.b64decode(shot["data"])
        for message in self.pending:
            self._note(visit, message)
        self.pending.clear()
        self.call("Target.closeTarget", {"targetId": target})
        return visit

    @staticmethod
    def _note(visit: PageVisit, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            visit.requests.append(params["request"]["url"])
        elif method == "Network.loadingFailed":
            visit.failed.append(f"{params.get('errorText')} ({params.get('requestId')})")
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"])
            visit.console.append((params["type"], text))
        elif method == "Runtime.exceptionThrown":
            visit.exceptions.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Log.entryAdded":
            entry = params["entry"]
            visit.log.append((entry["level"], f"{entry.get('text')} {entry.get('url', '')}"))
