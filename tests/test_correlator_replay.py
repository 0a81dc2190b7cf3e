"""Raw-record files: replaying a run gives exactly the traces the live run gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracer.correlate.correlator import Correlator
from tracer.correlate.kernel_only import KernelOnlyCorrelator
from tracer.correlate.synthetic import EAGAIN, MS, Scenario, arrival_order, is_hook
from tracer.correlate.synthetic_attach import attach_request
from tracer.model.trace import RequestTrace
from tracer.recording.raw_log import (
    KERNEL_ONLY,
    LoggingCorrelator,
    LostRecords,
    RawLogError,
    RawLogWriter,
    Tick,
    entry_from_json,
    entry_to_json,
    read_raw_log,
    replay,
)
from tracer.recording.writer import REDACTED


def busy_scenario() -> Scenario:
    scenario = Scenario()
    for c in range(3):
        connection = scenario.connect(1_000 * MS + c * MS, 50_000 + c, fd=7)
        connection.request(1_010 * MS + c * 40 * MS, pipelined=1)
        connection.request(
            1_020 * MS + c * 40 * MS, response=(50_000,), send_plan=(30_000, EAGAIN, 20_000)
        )
        connection.retransmit(1_021 * MS + c * 40 * MS)
        connection.request(1_025 * MS + c * 40 * MS, body_reads=2, upload_bytes=4000)
        connection.close(1_030 * MS + c * 40 * MS, by=("client", "server")[c % 2])
    return scenario


def live_run(path: Path, redact: bool) -> list[RequestTrace]:
    """Feed like a live run: arrival order, a clock tick now and then, a loss report."""
    correlator = LoggingCorrelator(Correlator(), RawLogWriter(str(path), redact=redact))
    traces: list[RequestTrace] = []
    for index, record in enumerate(arrival_order(busy_scenario().records)):
        traces += correlator.feed(record)
        if index % 10 == 9:
            traces += correlator.advance(1_000 * MS + index * 2 * MS)
        if index == 25:
            correlator.note_lost_records(4)
    traces += correlator.flush()
    correlator.writer.close()
    return traces


@pytest.mark.parametrize("redact", [True, False])
def test_replay_gives_exactly_the_live_traces(tmp_path: Path, redact: bool) -> None:
    path = tmp_path / "run.raw.jsonl"
    live = live_run(path, redact)

    replayed = replay(str(path))

    assert len(live) == 12
    assert any(any("lost 4 records" in note for note in t.notes) for t in live)
    assert [t.to_json() for t in replayed] == [t.to_json() for t in live]


def test_every_entry_kind_survives_json(tmp_path: Path) -> None:
    entries = [*busy_scenario().time_ordered(), Tick(5), LostRecords(2)]
    for entry in entries:
        assert entry_from_json(json.loads(json.dumps(entry_to_json(entry, redact=False)))) == entry


def test_credentials_are_redacted_in_raw_logs_too(tmp_path: Path) -> None:
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7)
    connection.request(1_001 * MS, headers=(("authorization", "Bearer secret"),))
    path = tmp_path / "run.raw.jsonl"
    with RawLogWriter(str(path)) as writer:
        for record in scenario.records:
            writer.write(record)

    assert "secret" not in path.read_text()
    [trace] = replay(str(path))
    assert trace.headers == (("authorization", REDACTED),)


def test_a_damaged_raw_log_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "run.raw.jsonl"
    with RawLogWriter(str(path)) as writer:
        for record in busy_scenario().time_ordered()[:5]:
            writer.write(record)
    lines = path.read_text().splitlines()
    lines[3] = '{"kind": "recv", "ts_ns": 1}'  # missing fields
    path.write_text("\n".join(lines) + "\n" + '{"kind": "se')

    with pytest.raises(RawLogError, match="line 4: TypeError"):
        list(read_raw_log(str(path)))
    problems: list[str] = []
    entries = list(read_raw_log(str(path), problems))
    assert len(entries) == 4
    assert problems[0].startswith("line 4: ")
    assert problems[1].startswith("line 7: ") and problems[1].endswith(
        "(truncated: the file was cut short)"
    )


def test_an_attach_mode_raw_log_replays_with_the_kernel_only_correlator(tmp_path: Path) -> None:
    """`attach --record-raw`: the header names the correlator, replay() picks it; the first
    bytes captured in the kernel keep the request line, not the credentials."""
    scenario = Scenario()
    connection = scenario.connect(1_000 * MS, 50_000, fd=7, with_open=False)
    request = b"GET /private?q=1 HTTP/1.1\r\nHost: a\r\nCookie: session=secret\r\nAuthoriza"
    attach_request(connection, 1_001 * MS, request=request)
    attach_request(connection, 1_010 * MS, request=b"POST /two HTTP/1.1\r\nHost: a\r\n\r\n")
    kernel_records = [r for r in scenario.time_ordered() if not is_hook(r)]
    path = tmp_path / "attach.raw.jsonl"
    live = LoggingCorrelator(
        KernelOnlyCorrelator(), RawLogWriter(str(path), header={"correlator": KERNEL_ONLY})
    )
    traces = [trace for record in kernel_records for trace in live.feed(record)]
    traces += live.flush()
    live.writer.close()

    assert "secret" not in path.read_text()
    replayed = replay(str(path))
    assert [(t.method, t.path, t.query) for t in replayed] == [
        ("GET", "/private", "q=1"),
        ("POST", "/two", ""),
    ]
    assert [t.to_json() for t in replayed] == [t.to_json() for t in traces]
    # the same file read as a run's (hooked) log would give nothing of the sort
    assert replay(str(path), Correlator()) != replayed
