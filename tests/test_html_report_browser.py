"""`reqtrace report --html` opened in headless Chromium (tests/headless_browser.py).

The page must load from a file with no console errors and no network request besides
itself, be complete with JavaScript switched off (it has none), and show its histograms and
waterfalls as drawn boxes of real size. A negative control first proves the browser helper
does see console errors, missing files and network attempts: a check that cannot fail
proves nothing. Run under `flock /tmp/reqtrace-heavy.lock` (a browser on a 2-core machine).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracer.recording.report import SLOWEST
from tracer.recording.writer import Recorder

from .headless_browser import Browser, chromium_or_skip
from .helpers import ROOT
from .test_html_report import HEADER, synthetic_traces

# Per visible histogram / waterfall: its drawn size and how many bars of its kind it holds.
DOM_QUERIES = {
    "histograms": """[...document.querySelectorAll('svg.histogram')].map(s => {
        const r = s.getBoundingClientRect();
        return {w: r.width, h: r.height, bins: s.querySelectorAll('rect.bin').length,
                stage: s.dataset.label};
    })""",
    "waterfalls": """[...document.querySelectorAll('svg.waterfall')].map(s => {
        const r = s.getBoundingClientRect();
        const bars = [...s.querySelectorAll('rect.stage')].map(b => b.getBoundingClientRect());
        return {w: r.width, h: r.height, bars: bars.length,
                drawn: bars.filter(b => b.width >= 1 && b.height > 0).length};
    })""",
    "sections": "[...document.querySelectorAll('section')].map(s => s.id)",
    "title": "document.title",
    "height": "document.documentElement.scrollHeight",
    "scripts": "document.scripts.length",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(chromium_or_skip()) as running:
        yield running


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_helper_sees_errors_missing_files_and_network_attempts(
    browser: Browser, tmp_path: Path
) -> None:
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>bad</title></head><body>'
        '<img src="missing.png"><img src="https://example.invalid/x.png">'
        '<script>console.error("boom")</script></body></html>'
    )
    seen = browser.visit(page)
    assert "boom" in seen.errors
    assert any("missing.png" in error for error in seen.errors)
    assert "https://example.invalid/x.png" in seen.other_requests

    quiet = browser.visit(page, scripts=False)
    assert "boom" not in quiet.errors  # scripts off: the page's script did not run


def test_report_html_loads_offline_without_errors_and_shows_its_pictures(
    browser: Browser, tmp_path: Path
) -> None:
    recording = tmp_path / "staging.jsonl"
    with Recorder(str(recording), HEADER) as recorder:
        for trace in synthetic_traces(3_000):
            recorder.write(trace)
        recorder.close({"recv": 2, "send": 0})
    page = tmp_path / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "tracer", "report", str(recording), "--html", "-o", str(page)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    seen = browser.visit(page, DOM_QUERIES, scripts=False)

    assert seen.errors == []
    assert seen.requests == [seen.url] and seen.failed == []  # the page itself, nothing else
    values = seen.values
    assert values["title"] == "reqtrace report: staging.jsonl" and values["scripts"] == 0
    assert values["sections"] == [
        "summary", "stages", "groups", "slowest", "holders", "losses", "recording",
    ]  # fmt: skip
    histograms = values["histograms"]
    stage_names = [h["stage"] for h in histograms]
    assert stage_names[-1] == "total" and {"app", "wakeup", "unobserved"} <= set(stage_names)
    for histogram in histograms:
        assert histogram["w"] >= 400 and histogram["h"] >= 40, histogram
        assert histogram["bins"] >= 1, histogram
    waterfalls = values["waterfalls"]
    assert len(waterfalls) == SLOWEST
    for waterfall in waterfalls:
        assert waterfall["w"] >= 700 and waterfall["h"] >= 100, waterfall
        assert waterfall["bars"] >= 11 and waterfall["drawn"] == waterfall["bars"], waterfall

    width, height = png_size(seen.screenshot)
    assert width >= 1200 and height >= 2000 and height >= values["height"] - 50
    assert len(seen.screenshot) > 50_000  # a drawn page, not a blank one
    (tmp_path / "report.png").write_bytes(seen.screenshot)

    # the same page with scripts on: still no error, nothing fetched (it has no script)
    scripted = browser.visit(page, {"n": "document.querySelectorAll('svg').length"})
    assert scripted.errors == [] and scripted.other_requests == []
    assert scripted.values["n"] >= len(histograms) + SLOWEST
    print(json.dumps({"screenshot": [width, height, len(seen.screenshot)]}))
