"""The dashboard on attach-mode traces: which stages are unavailable, and why, in plain words."""

from __future__ import annotations

from dashboards.feed import FeedStatus, RunInfo
from dashboards.status_header import ListState, header_lines
from dashboards.teaching import explain, summary
from dashboards.waterfall import LAYER_W, STAGE_W, hookless_stages, waterfall_lines
from tracer.correlate.kernel_only import KernelOnlyCorrelator
from tracer.correlate.synthetic import MS, Scenario, run
from tracer.correlate.synthetic_attach import attach_request
from tracer.model.trace import RequestTrace


def attach_trace() -> RequestTrace:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7, with_open=False)
    attach_request(connection, 1_001 * MS, request=b"GET /orders/7 HTTP/1.1\r\n\r\n")
    [trace] = run(scenario.time_ordered(), KernelOnlyCorrelator())  # type: ignore[arg-type]
    return trace


def test_the_waterfall_says_no_hooks_where_hook_stages_would_be() -> None:
    trace = attach_trace()
    assert {"parse", "app", "loop_queue"} <= hookless_stages(trace)
    rows = {
        line.plain[LAYER_W + 1 : LAYER_W + 1 + STAGE_W].strip(): line.plain
        for line in waterfall_lines(trace, 100, None)[1:-1]
    }
    assert rows["parse"].rstrip().endswith("no hooks")
    assert rows["app"].rstrip().endswith("no hooks")
    assert "no hooks" not in rows["server"] and "not seen" not in rows["server"]
    assert rows["wakeup"].rstrip().endswith("µs")


def test_the_teaching_panel_explains_the_server_stage_and_the_missing_ones() -> None:
    trace = attach_trace()
    server = explain(trace, "server").plain
    assert "GET /orders/7" in server and "reqtrace run" in server
    parse = explain(trace, "parse").plain
    assert "not observable without reqtrace's hooks" in parse.lower()
    assert "not observed" in summary(trace, "app").plain


def test_the_header_says_attach_mode() -> None:
    info = RunInfo(title="pid 42 (uvicorn)", server_pid=42, mode="attach")
    text = header_lines(info, FeedStatus(), [1.0], ListState(), width=160).plain
    assert "attach mode: no parse/app stages (no hooks)" in text
    plain = header_lines(RunInfo(title="app:app"), FeedStatus(), [1.0], ListState(), width=160)
    assert "attach mode" not in plain.plain and "no hooks" not in plain.plain
    fallback = RunInfo(title="app:app", mode="run", limits="kernel only")
    text = header_lines(fallback, FeedStatus(), [1.0], ListState(), width=160).plain
    assert "no hooks: no parse/app stages" in text
