"""Shared test rules.

Tests marked `bpf` load real BPF programs: they need root and BCC. Without them they skip,
except under REQTRACE_REQUIRE_BPF=1 (set by CI), where a skipped `bpf` test is a failure,
so a CI machine that silently lost its BPF ability cannot pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tracer.kernel.attach_plan import ProbePlan
from tracer.kernel.system_facts import gather, tracing_blocker

REQUIRE_BPF = os.environ.get("REQTRACE_REQUIRE_BPF") == "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("bpf") is None:
        return
    blocker = tracing_blocker(gather())
    if blocker:
        pytest.skip(f"bpf test: {blocker}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_BPF and report.skipped and item.get_closest_marker("bpf") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"bpf test skipped under REQTRACE_REQUIRE_BPF=1: {reason}"


@pytest.fixture(scope="session")
def tracepoint_plan() -> ProbePlan:
    """The probe plan of this machine (trials run once per test session)."""
    from tracer.kernel.attach_plan import build_plan
    from tracer.kernel.attach_trials import AttachTrials

    with AttachTrials(gather()) as trials:
        return build_plan(trials)
