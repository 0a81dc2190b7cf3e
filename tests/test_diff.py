"""`reqtrace diff A B`: per stage and route, A and B percentiles, the change, and whether it
is beyond noise (Mann-Whitney U, Holm-corrected, with a floor) - on synthetic recordings
whose ground truth is known, and on two real traced runs of tests/server_apps/accuracy_app.py
where /sleep takes 20 ms longer in B."""

from __future__ import annotations

import http.client
import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests.run_fixtures import free_port, reqtrace_run, stop, wait_listening
from tracer.commands.diff import run_diff
from tracer.model.stages import LAYER_OF
from tracer.model.trace import RequestTrace, Stage
from tracer.recording.diff import (
    BELOW_FLOOR,
    FASTER,
    MOVED,
    ONLY_B,
    SLOWER,
    TOO_FEW,
    UNCHANGED,
    diff_recordings,
    holm,
    mann_whitney_p,
    render_diff,
    stage_durations,
)
from tracer.recording.reader import Recording, load_recording
from tracer.recording.writer import Recorder

US = 1_000
MS = 1_000_000
HEADER = {"host": "box", "kernel": "6.18.0", "clock_offset_ns": 0}
STAGES = ("softirq", "ip_tcp", "wakeup", "recv", "parse", "app", "send")

Durations = Callable[[random.Random, str, str], int]


def baseline(rng: random.Random, path: str, stage: str) -> int:
    """Each stage ~ its own scale with 20% spread; /sleep's app ~5 ms."""
    if stage == "app":
        scale = 5 * MS if path == "/sleep" else 40 * US
    else:
        scales = {"softirq": 3, "ip_tcp": 12, "wakeup": 50, "recv": 8, "parse": 30, "send": 60}
        scale = scales.get(stage, 100) * US
    return max(1, int(rng.gauss(scale, scale * 0.2)))


def sleeps_longer(rng: random.Random, path: str, stage: str) -> int:
    extra = 20 * MS if path == "/sleep" and stage == "app" else 0
    return baseline(rng, path, stage) + extra


def synthetic(
    path: Path,
    durations: Durations,
    seed: int,
    per_route: int = 60,
    stages: tuple[str, ...] = STAGES,
) -> Recording:
    rng = random.Random(seed)
    traces = []
    start = 10**12
    for i in range(per_route * 2):
        route = ("/sleep", "/hello")[i % 2]
        built = []
        cursor = start
        for name in stages:
            end = cursor + durations(rng, route, name)
            built.append(Stage(name, LAYER_OF[name], cursor, end))
            cursor = end
        traces.append(
            RequestTrace(
                id=i + 1, pid=1, fd=5, conn_id=1, seq=i + 1, method="GET", path=route,
                status=200, client=("127.0.0.1", 4000), server=("127.0.0.1", 8000),
                start_ns=start, end_ns=cursor, complete=True, stages=tuple(built),
            )
        )  # fmt: skip
        start = cursor + MS
    with Recorder(str(path), HEADER) as recorder:
        for trace in traces:
            recorder.write(trace)
        recorder.close({})
    return load_recording(str(path))


def verdicts(diff: dict[str, Any], group: str) -> dict[str, str]:
    return {name: row["verdict"] for name, row in diff["groups"][group]["stages"].items()}


def moved(diff: dict[str, Any]) -> set[tuple[str, str]]:
    """(group, stage) of every move, per route (the "all requests" group mixes routes of
    5 ms and 40 µs, whose median may fall on either side)."""
    return {
        (group, name)
        for group, body in diff["groups"].items()
        for name, row in body["stages"].items()
        if row["verdict"] in MOVED and group != "all requests"
    }


# -- pure ----------------------------------------------------------------------------------


def test_the_route_whose_app_slept_longer_is_flagged_and_nothing_else(tmp_path: Path) -> None:
    a = synthetic(tmp_path / "a.jsonl", baseline, seed=1)
    b = synthetic(tmp_path / "b.jsonl", sleeps_longer, seed=2)
    diff = diff_recordings(a, b, by="path")
    assert moved(diff) == {("/sleep", "app"), ("/sleep", "total")}
    sleep = diff["groups"]["/sleep"]
    app = sleep["stages"]["app"]
    assert app["verdict"] == SLOWER
    assert app["a"]["count"] == app["b"]["count"] == 60
    assert 4_000 < app["a"]["p50_us"] < 6_000 and 24_000 < app["b"]["p50_us"] < 26_000
    assert 300 < app["change"]["p50_pct"] < 600
    assert app["change"]["p50_us"] == pytest.approx(20_000, rel=0.1)
    assert app["p_adjusted"] < 1e-10
    assert set(verdicts(diff, "/hello").values()) <= {UNCHANGED, BELOW_FLOOR}
    assert sleep["summary"].startswith("/sleep: app p")
    assert "significant" in sleep["summary"]
    assert "unchanged: softirq, ip_tcp, wakeup, recv, parse, send" in sleep["summary"]
    assert diff["groups"]["/hello"]["summary"].startswith("/hello: nothing moved beyond noise")


def test_the_same_distribution_twice_moves_nothing(tmp_path: Path) -> None:
    for seed in range(5):  # Holm keeps the whole diff's false alarms below alpha
        a = synthetic(tmp_path / f"a{seed}.jsonl", baseline, seed=10 + seed)
        b = synthetic(tmp_path / f"b{seed}.jsonl", baseline, seed=20 + seed)
        assert moved(diff_recordings(a, b, by="path")) == set()


def test_a_faster_stage_and_the_headline_percentile(tmp_path: Path) -> None:
    def tail_cut(rng: random.Random, path: str, stage: str) -> int:
        value = baseline(rng, path, stage)
        return value // 2 if stage == "send" else value

    a = synthetic(tmp_path / "a.jsonl", baseline, seed=3)
    b = synthetic(tmp_path / "b.jsonl", tail_cut, seed=4)
    diff = diff_recordings(a, b)
    row = diff["groups"]["all requests"]["stages"]["send"]
    assert row["verdict"] == FASTER
    assert row["change"]["p50_pct"] < -40
    line = diff["groups"]["all requests"]["summary"]
    assert "send p" in line and "-5" in line and "significant" in line


def test_a_real_but_tiny_shift_stays_below_the_floor(tmp_path: Path) -> None:
    def plus_two_us(rng: random.Random, path: str, stage: str) -> int:
        return baseline(rng, path, stage) + (2 * US if stage == "softirq" else 0)

    a = synthetic(tmp_path / "a.jsonl", baseline, seed=5, per_route=400)
    b = synthetic(tmp_path / "b.jsonl", plus_two_us, seed=6, per_route=400)
    row = diff_recordings(a, b)["groups"]["all requests"]["stages"]["softirq"]
    assert row["p_adjusted"] < 1e-6  # 3 → 5 µs is real ...
    assert row["verdict"] == BELOW_FLOOR  # ... but under the default 20 µs floor
    lowered = diff_recordings(a, b, min_change_us=1)
    assert lowered["groups"]["all requests"]["stages"]["softirq"]["verdict"] == SLOWER


def test_too_few_and_one_sided_stages_and_groups(tmp_path: Path) -> None:
    a = synthetic(tmp_path / "a.jsonl", baseline, seed=7, per_route=3)
    b = synthetic(
        tmp_path / "b.jsonl", baseline, seed=8, per_route=3, stages=(*STAGES[:3], "loop_busy")
    )
    diff = diff_recordings(a, b)
    v = verdicts(diff, "all requests")
    assert v["softirq"] == TOO_FEW  # 6 requests a side, fewer than MIN_SAMPLES
    assert v["loop_busy"] == ONLY_B
    assert v["app"] == "only in A"
    line = diff["groups"]["all requests"]["summary"]
    assert line.startswith("all requests: too few requests to compare (6 → 6 requests)")
    assert "loop_busy only in B" in line
    c = synthetic(tmp_path / "c.jsonl", baseline, seed=9)
    by_path = diff_recordings(a, c, by="status", path="/sleep")
    assert by_path["a"]["requests"] == 3 and by_path["b"]["requests"] == 60


def test_helpers() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []
    assert mann_whitney_p([5] * 10, [5] * 10) == 1.0
    assert mann_whitney_p(list(range(20)), list(range(100, 120))) < 1e-6
    trace = RequestTrace(
        id=1, pid=1, fd=1, conn_id=1, seq=1, method="GET", path="/", status=200,
        client=("a", 1), server=("b", 2), start_ns=0, end_ns=30, complete=True,
        stages=(Stage("unobserved", "unobserved", 0, 5), Stage("app", "app", 5, 20),
                Stage("unobserved", "unobserved", 20, 30)),
    )  # fmt: skip
    assert stage_durations([trace]) == {"app": [15], "unobserved": [15], "total": [30]}


def test_the_command_prints_tables_and_json_and_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    synthetic(tmp_path / "a.jsonl", baseline, seed=1)
    synthetic(tmp_path / "b.jsonl", sleeps_longer, seed=2)
    a, b = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
    assert run_diff(a, b, by="path", as_json=True) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["groups"]["/sleep"]["stages"]["app"]["verdict"] == SLOWER
    assert document["test"].startswith("Mann-Whitney U")
    assert run_diff(a, b, by="path", exit_code=True) == 1
    out = capsys.readouterr().out
    assert "/sleep: app p" in out and "path /hello" in out
    assert run_diff(a, a, exit_code=True) == 0
    assert run_diff(a, str(tmp_path / "missing.jsonl")) == 2
    console = Console(file=io.StringIO(), width=140)
    render_diff(diff_recordings(load_recording(a), load_recording(b), by="path"), console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "p50 A → B" in text and "slower" in text and "Holm" in text


# -- two real runs -------------------------------------------------------------------------

APP = "tests.server_apps.accuracy_app:app"
PER_ROUTE = 40


def record_run(path: Path, sleep_ms: int) -> None:
    """A traced run: PER_ROUTE requests of /sleep?ms=sleep_ms and /hello, alternating."""
    port = free_port()
    args = ("--port", str(port), "--no-access-log", "--record", str(path))
    with reqtrace_run(APP, *args) as process:
        wait_listening(port, process)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(PER_ROUTE):
            for target in (f"/sleep?ms={sleep_ms}", "/hello"):
                connection.request("GET", target)
                response = connection.getresponse()
                response.read()
                assert response.status == 200
        connection.close()
        stop(process)


@pytest.mark.bpf
def test_diff_of_two_real_runs_flags_the_route_that_sleeps_20_ms_longer(tmp_path: Path) -> None:
    record_run(tmp_path / "a.jsonl", sleep_ms=5)
    record_run(tmp_path / "b.jsonl", sleep_ms=25)
    a, b = load_recording(str(tmp_path / "a.jsonl")), load_recording(str(tmp_path / "b.jsonl"))
    diff = diff_recordings(a, b, by="path")
    sleep = diff["groups"]["/sleep"]["stages"]["app"]
    assert sleep["verdict"] == SLOWER
    assert sleep["a"]["count"] == sleep["b"]["count"] == PER_ROUTE
    assert sleep["change"]["p50_us"] == pytest.approx(20_000, abs=3_000)
    assert sleep["p_adjusted"] < 1e-6
    assert diff["groups"]["/hello"]["stages"]["app"]["verdict"] not in MOVED
    # At the millisecond scale of the change, nothing but that app stage (and the totals
    # it is part of) moved. Below it, two runs on a shared VM differ by some µs anyway
    # (the drift tracer/recording/diff.py describes), which is why the floor is a flag.
    coarse = diff_recordings(a, b, by="path", min_change_us=1000)
    assert moved(coarse) == {("/sleep", "app"), ("/sleep", "total")}
