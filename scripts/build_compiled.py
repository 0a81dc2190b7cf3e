"""Compile the correlator with mypyc into build/compiled/ (scripts/setup runs this).

The sans-IO correlator (tracer/correlate/) is already mypy --strict; mypyc turns it into C
extension modules that run the same code 2-3x faster (measured on the synthetic workload of
scripts/bench_correlator). The extensions go to build/compiled/, never next to the sources:
tracer/correlate/__init__.py puts them in front of the Python sources only when they were
built from exactly the sources present (a hash of them is stored beside the build), so an
edited source is never shadowed by a stale build. REQTRACE_PURE=1 forces the sources.

    python -m scripts.build_compiled          # build if the sources changed (idempotent)
    python -m scripts.build_compiled --force
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracer.correlate.compiled import (  # noqa: E402
    BUILD_DIR,
    COMPILED_MODULES,
    STAMP,
    sources_digest,
)


def build(force: bool = False) -> bool:
    """Build when the sources changed since the last build; True when something was built."""
    digest = sources_digest()
    stamp = BUILD_DIR / STAMP
    if not force and stamp.is_file() and stamp.read_text() == digest:
        return False
    from mypyc.build import mypycify
    from setuptools import setup

    files = [str(ROOT / (name.replace(".", "/") + ".py")) for name in COMPILED_MODULES]
    work = Path(tempfile.mkdtemp(prefix="reqtrace-mypyc-"))
    fresh = BUILD_DIR.with_name(BUILD_DIR.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    here = os.getcwd()
    try:
        os.chdir(work)  # away from pyproject.toml: this setup() builds extensions only
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extensions = mypycify(files, opt_level="3", target_dir=str(work))
        setup(
            name="reqtrace-compiled",
            ext_modules=extensions,
            script_args=[
                "--quiet",
                "build_ext",
                "--build-lib",
                str(fresh),
                "--build-temp",
                str(work / "temp"),
            ],
        )
    finally:
        os.chdir(here)
        shutil.rmtree(work, ignore_errors=True)
    (fresh / STAMP).write_text(digest)
    shutil.rmtree(BUILD_DIR, ignore_errors=True)
    fresh.rename(BUILD_DIR)
    return True


if __name__ == "__main__":
    built = build(force="--force" in sys.argv[1:])
    print(f"build_compiled: {'built' if built else 'up to date'}: {BUILD_DIR}", file=sys.stderr)
