"""Use the mypyc-compiled correlator when it was built from exactly these sources.

scripts/build_compiled.py (run by scripts/setup) compiles COMPILED_MODULES into BUILD_DIR
with a digest of their sources. `activate()` (called by this package's __init__) puts the
compiled modules in front of the sources only when that digest matches the sources present:
an edited source runs as Python until the next build, never shadowed by a stale extension.
REQTRACE_PURE=1 keeps the sources (tests compare both paths).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parents[1]
BUILD_DIR = ROOT / "build" / "compiled"
STAMP = "SOURCES.sha256"
COMPILED_MODULES = (
    "tracer.correlate.correlator",
    "tracer.correlate.connection",
    "tracer.correlate.connection_table",
    "tracer.correlate.reorder",
    "tracer.correlate.stage_builder",
    "tracer.correlate.loop_blame",
    "tracer.correlate.kernel_only",
    "tracer.correlate.request_line",
)
PURE_ENV = "REQTRACE_PURE"


def sources_digest() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for name in COMPILED_MODULES:
        digest.update((ROOT / (name.replace(".", "/") + ".py")).read_bytes())
    return digest.hexdigest()


def state() -> str:
    """ "compiled", or why the Python sources are used ("pure: ...")."""
    if os.environ.get(PURE_ENV):
        return f"pure: {PURE_ENV} is set"
    stamp = BUILD_DIR / STAMP
    if not stamp.is_file():
        return "pure: not built (scripts/setup builds it)"
    if stamp.read_text() != sources_digest():
        return "pure: the build is older than the sources (run scripts/setup)"
    return "compiled"


def activate(package_path: list[str]) -> bool:
    """Put the compiled modules first on this package's path when they are current."""
    if state() != "compiled":
        return False
    compiled = str(BUILD_DIR / "tracer" / "correlate")
    if compiled not in package_path:
        package_path.insert(0, compiled)
    if str(BUILD_DIR) not in sys.path:
        sys.path.append(str(BUILD_DIR))  # mypyc's shared support module lives at its top
    return True
