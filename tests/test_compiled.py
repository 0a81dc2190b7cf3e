"""The mypyc-compiled correlator (tracer/correlate/compiled.py): in use when current, never
stale, and giving exactly the traces the Python sources give."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

import tracer.correlate
from tracer.correlate import compiled
from tracer.correlate.synthetic import EAGAIN, MS, Scenario, arrival_order, run

from .helpers import ROOT

DIGEST_SCRIPT = """
import hashlib, json, sys
import tracer.correlate
from tracer.correlate.synthetic import EAGAIN, MS, Scenario, arrival_order, run
sys.path.insert(0, {root!r})
from tests.test_compiled import workload_digest
print(json.dumps([tracer.correlate.COMPILED, workload_digest()]))
"""


def workload_digest() -> str:
    """sha256 over every trace of a busy synthetic workload (pipelining, uploads, loss)."""
    scenario = Scenario()
    for c in range(8):
        connection = scenario.connect(1_000 * MS + c * MS, 50_000 + c, fd=7 + c)
        for i in range(30):
            at = 1_010 * MS + i * 3 * MS + c * 100_000
            connection.request(
                at,
                pipelined=i % 7 == 3,
                body_reads=2 if i % 5 == 1 else 0,
                upload_bytes=4000 if i % 5 == 1 else 0,
                send_plan=(30_000, EAGAIN, 20_000) if i % 9 == 2 else None,
                response=(50_000,) if i % 9 == 2 else (1200,),
                loop_busy=i % 4 == 0,
                app_time=(2 * MS) if i % 6 == 0 else 40_000,
            )
    records = arrival_order(scenario.records)
    kept = [r for i, r in enumerate(records) if i % 97 != 5]  # a few records lost
    digest = hashlib.sha256()
    for trace in run(kept):
        digest.update(json.dumps(trace.to_json(), sort_keys=True).encode())
    return digest.hexdigest()


def _digest_in_child(pure: bool) -> tuple[bool, str]:
    env = {**os.environ}
    env.pop(compiled.PURE_ENV, None)
    if pure:
        env[compiled.PURE_ENV] = "1"
    out = subprocess.run(
        [sys.executable, "-c", DIGEST_SCRIPT.format(root=str(ROOT))],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    in_use, digest = json.loads(out.stdout)
    return bool(in_use), str(digest)


def test_the_compiled_correlator_is_built_current_and_in_use() -> None:
    """scripts/setup (which scripts/test runs first) builds it; a stale build is not used."""
    if os.environ.get(compiled.PURE_ENV):
        pytest.skip(f"{compiled.PURE_ENV} is set")
    assert compiled.state() == "compiled", compiled.state()
    assert tracer.correlate.COMPILED
    from tracer.correlate import correlator

    assert correlator.__file__ is not None and correlator.__file__.endswith(".so")


def test_compiled_and_pure_give_identical_traces() -> None:
    compiled_in_use, compiled_digest = _digest_in_child(pure=False)
    pure_in_use, pure_digest = _digest_in_child(pure=True)
    assert compiled_in_use and not pure_in_use
    assert compiled_digest == pure_digest


def test_a_build_older_than_the_sources_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(compiled.PURE_ENV, raising=False)
    monkeypatch.setattr(compiled, "sources_digest", lambda: hashlib.sha256(b"edited").hexdigest())
    assert compiled.state().startswith("pure: the build is older than the sources")
    path: list[str] = []
    assert compiled.activate(path) is False and path == []
