"""The pure parts of scripts/bench: wrk output parsing, cells, the table. No benchmarking."""

from __future__ import annotations

import json

import pytest

from scripts.bench_dashboard import traces_at
from scripts.bench_suite import (
    Measurements,
    Settings,
    build_rows,
    machine_load,
    records_cell,
    rotated,
)
from scripts.bench_table import Row, as_json, cpu_model, median_best, ratio, render
from scripts.bench_wrk import WrkError, duration_ms, parse_wrk, wrk_argv

WRK_LATENCY = """\
Running 2s test @ http://127.0.0.1:41234/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  345.67us   8.90ms   90.12%
    Req/Sec    49.50k     2.10k   52.30k    75.00%
  Latency Distribution
     50%  812.00us
     75%    1.10ms
     90%    1.35ms
     99%    2.62ms
  98532 requests in 2.00s, 12.31MB read
  Socket errors: connect 0, read 0, write 0, timeout 3
Requests/sec:  49241.69
Transfer/sec:      6.15MB
"""


def test_parse_wrk_with_latency_distribution() -> None:
    result = parse_wrk(WRK_LATENCY)
    assert result.requests == 98532
    assert result.requests_per_s == pytest.approx(49241.69)
    assert result.latency_ms == {50: 0.812, 75: 1.1, 90: 1.35, 99: 2.62}
    assert result.p99_ms == 2.62
    assert result.socket_errors.endswith("timeout 3")
    assert result.bad_status == 0


def test_parse_wrk_without_latency_and_with_bad_answers() -> None:
    plain = WRK_LATENCY.replace("  Latency Distribution\n", "").replace(
        "Requests/sec", "  Non-2xx or 3xx responses: 7\nRequests/sec"
    )
    plain = "\n".join(line for line in plain.splitlines() if "%  " not in line)
    result = parse_wrk(plain)
    assert result.latency_ms == {}
    assert result.p99_ms is None
    assert result.bad_status == 7


def test_parse_wrk_refuses_what_it_does_not_understand() -> None:
    with pytest.raises(WrkError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize(
    ("text", "ms"), [("812.00us", 0.812), ("1.5ms", 1.5), ("2.01s", 2010.0), ("1.00m", 60000.0)]
)
def test_wrk_durations(text: str, ms: float) -> None:
    assert duration_ms(text) == pytest.approx(ms)


def test_wrk_argv_only_targets_loopback() -> None:
    argv = wrk_argv(8000, 2, 50, latency=True)
    assert argv[-1] == "http://127.0.0.1:8000/"
    assert "--latency" in argv and "-d2s" in argv


def test_cells() -> None:
    assert median_best(12345.4, 12800) == "12,345 (best 12,800)"
    assert median_best(1.0, 1.0, 2) == "1.00"
    assert median_best(None, None) == "—"
    assert ratio(3.0, 2.0) == "1.50x"
    assert ratio(None, 2.0) == ratio(1.0, 0.0) == "—"
    assert records_cell(100, 0, 50) == "2.00"
    assert records_cell(60, 40, 50) == "2.00 (40% lost)"
    assert records_cell(0, 0, 0) == "—"


def test_variants_alternate_across_rounds() -> None:
    assert [rotated(("a", "b"), n) for n in range(3)] == [["a", "b"], ["b", "a"], ["a", "b"]]


def test_traces_in_a_window_are_interpolated() -> None:
    samples = [(0, 0), (100, 10), (200, 30)]
    assert traces_at(samples, 150) == 20
    assert traces_at(samples, -5) == 0
    assert traces_at(samples, 500) == 30
    assert traces_at([], 5) == 0


def test_cpu_model_and_machine_load() -> None:
    assert cpu_model("processor\t: 0\nmodel name\t: Intel(R)  Xeon(R)\n") == "Intel(R) Xeon(R)"
    line = machine_load([0] * 8, [50, 0, 0, 40, 0, 0, 0, 10], 1.5)
    assert "60% busy" in line and "10% stolen" in line and "1.50" in line


def _settings() -> Settings:
    return Settings(
        rounds=2,
        seconds=2.0,
        connections=50,
        loop="uvloop",
        correlator_requests=1000,
        dashboard_rate=200.0,
        dashboard_connections=8,
        dashboard_warmup_s=2.0,
        dashboard_window_s=6.0,
        pins=(0, 1),
    )


def _traced(variant: str, rps: float, p99: float) -> dict[str, object]:
    return {
        "variant": variant,
        "wrk": {"requests": 1000, "requests_per_s": rps, "latency_ms": {99: p99}},
        "server_cpu_us_per_request": 20.0,
        "kernel_records": 1500 if variant == "traced" else 0,
        "hook_records": 600 if variant == "traced" else 0,
        "lost_records": 500 if variant == "traced" else 0,
        "traces": 900,
        "hooks_dropped": 0,
        "pipeline_behind_s": 0.5,
        "bpf_ns": 4_000_000,
        "bpf_runs": 30_000,
        "pipeline_cpu_us_per_request": 30.0,
    }


def test_table_from_measurements_renders_and_round_trips_to_json() -> None:
    found = Measurements()
    for rate in (30_000.0, 32_000.0):
        found.server["reqtrace"].append({"requests_per_s": rate, "server_cpu_us_per_request": 25})
        found.server["uvicorn"].append({"requests_per_s": 20_000, "server_cpu_us_per_request": 35})
        found.traced["traced"].append(_traced("traced", 20_000, 8.0))
        found.traced["untraced"].append(_traced("untraced", 50_000, 2.0))
        found.correlator["correlator"].append(150_000)
        found.correlator["reorder"].append(450_000)
        found.dashboard.append(
            {
                "requests_per_s": 200,
                "process_percent": 40.0,
                "pipeline_percent": 3.0,
                "dashboard_percent": 37.0,
                "process_us_per_request": 2000,
                "pipeline_us_per_request": 150,
            }
        )
    found.correlator_workload = {"records": 3000, "requests": 1000, "connections": 64}
    rows = build_rows(_settings(), found)
    facts = {
        "date": "2025-01-01 00:00 UTC",
        "kernel": "Linux 6.18",
        "cpu": "Test CPU",
        "cores": 2,
        "python": "CPython 3.11.2",
        "wrk": "4.1.0",
        "command": "scripts/bench --quick",
    }
    text = render(facts, ["one setup line"], rows)
    lines = text.splitlines()
    assert lines[0].startswith("reqtrace benchmark, 2025-01-01 00:00 UTC: Linux 6.18, Test CPU")
    assert "    scripts/bench --quick" in lines
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == len(rows) + 2
    assert len({len(line) for line in table}) == 1  # aligned columns
    assert "| 31,000 (best 32,000) |" in text and "1.55x" in text
    assert "2.00 (25% lost)" in text  # (1500 + 500) / 1000 records per request
    assert "4,000" in text  # eBPF ns per request
    document = json.loads(json.dumps(as_json(facts, [], rows, found.as_dict())))
    assert document["schema"] == "reqtrace.bench/1"
    assert [row["what"] for row in document["rows"]] == [row.what for row in rows]
    first = document["rows"][0]["values"]
    assert first["reqtrace"] == {"median": 31_000, "best": 32_000}
    assert first["ratio"] == pytest.approx(1.55)


def test_render_lists_notes_under_the_table() -> None:
    facts = {k: "x" for k in ("date", "kernel", "cpu", "cores", "python", "wrk", "command")}
    text = render(facts, [], [Row("thing", "1", note="what it means")])
    assert text.endswith("- thing: what it means")
