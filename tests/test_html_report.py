"""`reqtrace report --html`: the SVG helpers as pure functions, the page's content, and a
page for 100,000 requests that stays small (binned histograms, waterfalls for the slowest N
only). tests/test_html_report_browser.py opens the page in headless Chromium."""

from __future__ import annotations

import random
import re
import stat
import time
from pathlib import Path

import pytest

from tracer.commands.report import run_report
from tracer.model.stages import LAYER_OF
from tracer.model.trace import Blame, ConnectionFacts, RequestTrace, Stage
from tracer.recording.html_report import (
    bars_of,
    build_html,
    shared_axis,
    slowest_traces,
    stage_durations,
)
from tracer.recording.reader import Recording, load_recording
from tracer.recording.report import SLOWEST
from tracer.recording.svg import (
    Bar,
    LogAxis,
    axis_for,
    histogram,
    histogram_svg,
    nice_step,
    tick_label,
    waterfall_svg,
)
from tracer.recording.writer import Recorder

US = 1_000
MS = 1_000_000
PLAN = [
    {
        "name": "nic_irq",
        "title": "NIC hardware interrupt",
        "required": False,
        "chosen": "tracepoint",
        "summary": "tracepoint (irq:irq_handler_entry)",
        "gives_up": "",
    },
    {
        "name": "thread_wakeup",
        "title": "scheduler wakeup",
        "required": False,
        "chosen": None,
        "summary": "absent",
        "gives_up": "run-queue split",
    },
]
HEADER = {
    "host": "staging-7",
    "kernel": "6.18.0",
    "app": "shop.main:app",
    "mode": "asgi",  # a key future headers may carry: shown as it is
    "started_unix_ns": 1_796_317_623_524_364_908,
    "command": ["reqtrace", "run", "shop.main:app", "--record", "x.jsonl"],
    "probe_plan": PLAN,
}
# (stage, median µs) of a loopback request; the app's comes from the route
LOOPBACK_US = [
    ("backlog", 3),
    ("softirq", 3),
    ("ip_tcp", 12),
    ("wakeup", 60),
    ("event_loop", 10),
    ("recv", 7),
    ("parse", 30),
    ("loop_queue", 50),
    ("app", 0),
    ("handoff", 8),
    ("send", 35),
]
ROUTES = [("/", 80), ("/users/{n}", 400), ("/search", 3_000), ("/slow", 20_000)]


def synthetic_traces(n: int, seed: int = 21) -> list[RequestTrace]:
    """n loopback-shaped requests over four routes (ids in /users/N), log-normal stage
    times, now and then a loop holder and an unobserved gap."""
    rng = random.Random(seed)
    lognormal = rng.lognormvariate
    facts = ConnectionFacts(handshake_us=30.0, accept_queue_us=80.0, srtt_us=25)
    traces = []
    start = 1_000 * MS
    for i in range(1, n + 1):
        path, app_us = ROUTES[i % len(ROUTES)]
        path = path.replace("{n}", str(i))
        stages, at = [], start
        blame: tuple[Blame, ...] = ()
        notes = ["nic_irq: no hardware interrupt: packet came from lo (software device)"]
        for name, median in LOOPBACK_US:
            ns = int((app_us if name == "app" else median) * US * lognormal(0, 0.5))
            stages.append(Stage(name, LAYER_OF[name], at, at + ns))
            at += ns
            if name == "recv" and i % 97 == 0:
                stages.append(Stage("unobserved", "unobserved", at, at + 40 * US))
                notes.append("unobserved: recv → parse: no probe or hook saw this interval")
                at += 40 * US
            if name == "loop_queue" and i % 13 == 0:
                blame = (Blame("loop_queue", i - 1, "GET", "/search", ns),)
        traces.append(
            RequestTrace(
                id=i, pid=1, fd=9, conn_id=1 + i // 50, seq=1 + i % 50, method="GET",
                path=path, status=200, client=("127.0.0.1", 40_000 + i % 20_000),
                server=("127.0.0.1", 8000), start_ns=start, end_ns=at, complete=i % 501 != 0,
                stages=tuple(stages), notes=tuple(notes), connection=facts, blame=blame,
            )
        )  # fmt: skip
        start = at + 100 * US
    return traces


def recording_of(traces: list[RequestTrace], **footer: object) -> Recording:
    return Recording(
        HEADER, traces, {"type": "footer", "requests": len(traces), **footer}, [], "/x/run.jsonl"
    )


# -- SVG helpers ----------------------------------------------------------------------------


def test_log_axis_bins_are_decades_split_evenly() -> None:
    axis = LogAxis(3, 6, per_decade=5)  # 1 µs .. 1 ms
    assert axis.bins == 15
    assert axis.edge(0) == 1_000 and axis.edge(5) == pytest.approx(10_000)
    assert axis.bin_of(1_000) == 0 and axis.bin_of(9_999) == 4 and axis.bin_of(10_000) == 5
    assert axis.bin_of(0) == 0 and axis.bin_of(10) == 0  # below the axis: first bin
    assert axis.bin_of(10**9) == 14  # above: last bin
    assert axis.position(10**3) == 0 and axis.position(10**6) == 1
    assert axis.position(10**4) == pytest.approx(1 / 3)


def test_axis_for_covers_the_values_in_whole_decades() -> None:
    assert axis_for(3_000, 25 * MS) == LogAxis(3, 8)
    assert axis_for(0, 0) == LogAxis(0, 1)
    assert axis_for(1_000, 1_000) == LogAxis(3, 4)


def test_histogram_counts_every_value_once() -> None:
    axis = LogAxis(3, 6, per_decade=1)
    counts = histogram([0, 1_000, 5_000, 10_000, 99_999, 500_000, 10**9], axis)
    assert counts == [3, 2, 2]
    assert sum(histogram(range(1, 10_000, 7), axis_for(1, 10_000))) == len(range(1, 10_000, 7))


def test_tick_labels_and_nice_steps() -> None:
    labels = [tick_label(10.0**k) for k in range(0, 11)]
    assert labels == [
        "1 ns", "10 ns", "100 ns", "1 µs", "10 µs", "100 µs", "1 ms", "10 ms", "100 ms",
        "1 s", "10 s",
    ]  # fmt: skip
    assert nice_step(34 * MS) == 10 * MS  # 0, 10, 20, 30 ms
    assert nice_step(12 * MS) == 5 * MS
    assert nice_step(1_000) == 200
    assert nice_step(0) == 1


def test_histogram_svg_draws_non_empty_bins_and_markers() -> None:
    axis = LogAxis(3, 6, per_decade=2)
    counts = [0, 4, 10, 0, 1, 0]
    svg = histogram_svg(
        counts, axis, color="#123456", markers=[("p50", 20_000), ("p99", 300_000)], label="app"
    )
    assert svg.startswith('<svg class="histogram" data-label="app"') and svg.endswith("</svg>")
    bins = re.findall(r'<rect class="bin" data-count="(\d+)"', svg)
    assert [int(b) for b in bins] == [4, 10, 1]
    assert re.findall(r'data-marker="(p\d+)"', svg) == ["p50", "p99"]
    heights = [float(h) for h in re.findall(r'class="bin"[^>]* height="([\d.]+)"', svg)]
    assert max(heights) > 10 * min(heights) - 1 and min(heights) >= 1  # 1 of 10: still seen
    with pytest.raises(ValueError):
        histogram_svg([1, 2], axis, color="#000")


def test_waterfall_svg_has_a_row_per_stage_on_a_linear_axis() -> None:
    bars = [
        Bar("recv", "syscall", 0, 2 * US),
        Bar("app", "app", 2 * US, 20 * MS, note="loop held by <GET /x>"),
        Bar("send", "syscall", 20 * MS, 20 * MS + 30 * US),
    ]
    svg = waterfall_svg(bars, 0, 20 * MS + 30 * US, width=600, label_width=100, value_width=50)
    rects = re.findall(r'<rect class="stage" data-stage="(\w+)" data-ns="(\d+)" x="([\d.]+)"'
                       r' y="\d+" width="([\d.]+)"', svg)  # fmt: skip
    assert [(name, int(ns)) for name, ns, _, _ in rects] == [
        ("recv", 2 * US),
        ("app", 20 * MS - 2 * US),
        ("send", 30 * US),
    ]
    xs = [float(x) for _, _, x, _ in rects]
    widths = [float(w) for _, _, _, w in rects]
    assert xs == sorted(xs) and xs[0] == 100
    assert widths[0] == 1  # 2 µs of 20 ms: below a pixel, drawn as one
    assert 440 < widths[1] <= 450  # almost all of the 450 px plot
    assert "loop held by &lt;GET /x&gt;" in svg and "<GET" not in svg


# -- the page -------------------------------------------------------------------------------


def test_page_has_every_part_and_only_inline_content() -> None:
    traces = synthetic_traces(400)
    html = build_html(recording_of(traces, lost_records={"recv": 3, "send": 0}, skipped=0))

    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    for section in ("summary", "stages", "groups", "slowest", "holders", "losses", "recording"):
        assert f'<section id="{section}">' in html
    stages = stage_durations(traces)
    assert html.count('<svg class="histogram"') == len(stages)  # each stage + the total
    assert html.count('<svg class="waterfall"') == SLOWEST
    slow_ids = [t.id for t in slowest_traces(traces, SLOWEST)]
    assert re.findall(r'<div class="request" id="request-(\d+)"', html) == [
        str(i) for i in slow_ids
    ]
    # per route: ids collapsed, from build_report(by="route")
    assert "<code>/users/{id}</code>" in html and "/users/17<" not in html
    assert "lost records (ring buffer full): 3 (recv 3)" in html
    assert "GET /search" in html  # a loop holder
    # the header as it is: a future "mode" key included, the probe plan summarised
    assert "mode asgi" in html and "<th>mode</th><td>asgi</td>" in html
    assert "2 probe points: 1 attached (tracepoint 1); absent: thread_wakeup" in html
    assert "reqtrace run shop.main:app --record x.jsonl" in html
    # self-contained: no scripts, no external anything
    assert "<script" not in html and "<link" not in html and "url(" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "@import" not in html


def test_paths_and_notes_are_escaped() -> None:
    evil = "/<script>alert(1)</script>"
    trace = synthetic_traces(4)[3]._replace(path=evil, notes=("<b>note</b>",))
    html = build_html(recording_of([trace]))
    assert "<script" not in html and "&lt;script&gt;" in html and "<b>note" not in html


def test_a_cut_short_headerless_or_empty_recording_still_makes_a_page() -> None:
    bare = Recording(None, synthetic_traces(3), None, ["line 1: no header line"], "")
    html = build_html(bare)
    assert "no footer: the recording was cut short" in html
    assert "no header line" in html and "host and kernel unknown" in html
    empty = build_html(Recording(HEADER, [], {"type": "footer"}, [], "e.jsonl"))
    assert "No requests to show." in empty and '<svg class="waterfall"' not in empty


def test_filters_apply_like_the_text_report() -> None:
    traces = synthetic_traces(200)
    html = build_html(recording_of(traces), path="/slow", slower_than_ms=1)
    slow = [t for t in traces if t.path == "/slow" and t.total_ns > MS]
    assert f"{len(slow):,} of 200 requests (path /slow, slower_than_ms 1)" in html
    assert "<code>/search</code>" not in html


def test_waterfall_rows_carry_holders_and_gap_reasons() -> None:
    traces = synthetic_traces(200)
    gapped = bars_of(traces[97 - 1])
    assert [b.name for b in gapped] == [s.name for s in traces[97 - 1].stages]
    gap = next(b for b in gapped if b.name == "unobserved")
    assert gap.note == "no probe or hook saw this interval"
    held = next(b for b in bars_of(traces[26 - 1]) if b.name == "loop_queue")
    assert held.note.startswith("loop held by GET /search (request 25) ")


def test_report_html_command_writes_a_private_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.jsonl"
    with Recorder(str(path), HEADER) as recorder:
        for trace in synthetic_traces(30):
            recorder.write(trace)
        recorder.close({"recv": 0})
    out = tmp_path / "report.html"

    assert run_report(str(path), False, html=True, output=str(out)) == 0

    assert "wrote the HTML report" in capsys.readouterr().err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().count('<svg class="waterfall"') == SLOWEST
    assert build_html(load_recording(str(path))).count("<svg") == out.read_text().count("<svg")


@pytest.mark.timeout(300)
def test_a_hundred_thousand_requests_make_a_small_page() -> None:
    """Histograms are binned and only the slowest N requests get a waterfall, so the page
    stays the same size however long the run was. (Timing is printed, not asserted.)"""
    traces = synthetic_traces(100_000)
    began = time.process_time()
    html = build_html(recording_of(traces))
    spent = time.process_time() - began

    size = len(html.encode())
    print(f"\n100,000 requests: page {size / 1024:.0f} KiB built in {spent:.2f} s of CPU")
    assert size < 2 * 1024 * 1024
    assert html.count('<svg class="waterfall"') == SLOWEST
    axis = shared_axis(stage_durations(traces[:1000]))
    assert html.count('<rect class="bin"') <= (len(LOOPBACK_US) + 2) * (axis.bins + 20)
    assert html.count('<details class="group">') == len(ROUTES)  # /users/N: one route
