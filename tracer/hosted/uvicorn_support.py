"""Which uvicorn versions and `--http` choices get reqtrace's hooks, and the sentence when not.

The hooked protocols subclass uvicorn's HttpToolsProtocol and H11Protocol and rely on what
those have had unchanged from 0.20.0 (Dec 2022) to 0.55.0 (the newest tested): the parser
callbacks, `self.app` called by each request's cycle, `self.conn` (h11) and a transport
given to connection_made. Older versions, and protocols reqtrace does not know (`--http
zttp`, a class of the user's own), are served as the user asked, without hooks: the run is
then traced from the kernel only, and says so.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

OLDEST = (0, 20, 0)  # the oldest hooked
OLDEST_TESTED = (0, 20, 0)  # tests/test_hosted_run.py, in scripts/setup's second environment
NEWEST_TESTED = (0, 55, 0)
HOOKED = {
    "httptools": "tracer.hosted.uvicorn_httptools:TracedHttpToolsProtocol",
    "h11": "tracer.hosted.uvicorn_h11:TracedH11Protocol",
}


def version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def show(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def unsupported_reason(version: str) -> str:
    """Why this uvicorn version gets no hooks ("" when it does)."""
    found = version_tuple(version)
    if not found or found < OLDEST:
        return (
            f"uvicorn {version} is older than {show(OLDEST)}, the oldest reqtrace hooks into"
            f" (tested: {show(OLDEST_TESTED)} and {show(NEWEST_TESTED)})"
        )
    return ""


def hooked_protocol(http: Any, version: str) -> tuple[type[Any] | None, str]:
    """The hooked protocol class for uvicorn's `http` setting, or None and why not."""
    reason = unsupported_reason(version)
    if reason:
        return None, reason
    if not isinstance(http, str):
        return None, f"--http {getattr(http, '__name__', http)} is not a protocol reqtrace hooks"
    choice = http
    if choice == "auto":
        choice = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    target = HOOKED.get(choice)
    if target is None:
        return None, f"--http {http} is not a protocol reqtrace hooks (httptools, h11)"
    module_name, _, name = target.partition(":")
    protocol: type[Any] = getattr(importlib.import_module(module_name), name)
    return protocol, ""
