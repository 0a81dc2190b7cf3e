"""`reqtrace explain`: one request as a Markdown handout with a Mermaid sequence diagram.

Pure tests build RequestTraces by hand; one `bpf` test explains a real recording of
`reqtrace run` serving tests/server_apps/accuracy_app.py (/hello and /sleep?ms=20) and checks
the diagram's notes against the recorded durations. The Markdown is parsed with
markdown-it-py (a dependency of rich); the Mermaid block is checked line by line against
the few statement forms the generator writes (each one Mermaid 11's sequenceDiagram grammar
accepts: participant ... as ..., A->>B: text, A-->>B: text, Note over A[,B]: text).
"""

from __future__ import annotations

import http.client
import re
import stat
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tracer.commands.explain import SECTIONS, handout, run_explain
from tracer.model.stages import LAYER_OF, STAGE_NAMES
from tracer.model.trace import Blame, ConnectionFacts, RequestTrace, Stage
from tracer.model.units import format_duration
from tracer.recording.explain import (
    PARTICIPANTS,
    STAGE_ACTORS,
    Choice,
    NoSuchRequest,
    choose_request,
    full_path,
    mermaid_text,
    sequence_diagram,
)
from tracer.recording.reader import Recording, load_recording
from tracer.recording.writer import Recorder

from .run_fixtures import free_port, reqtrace_run, stop, wait_listening

US = 1_000
MS = 1_000_000
HEADER = {"host": "box", "kernel": "6.18.0", "mode": "asgi", "probe_plan": []}
LOOPBACK_NOTE = "nic_irq: no hardware interrupt: packet came from lo (software device)"

PARTICIPANT_LINE = re.compile(r"^    participant (\w+) as (.+)$")
MESSAGE_LINE = re.compile(r"^    (\w+)(->>|-->>)(\w+): (.+)$")
NOTE_LINE = re.compile(r"^    Note over (\w+)(?:,(\w+))?: (.+)$")


def trace_with(
    plan: list[tuple[str, int]],
    *,
    id: int = 1,
    path: str = "/sleep",
    query: str = "ms=20",
    complete: bool = True,
    notes: tuple[str, ...] = (LOOPBACK_NOTE,),
    blame: tuple[Blame, ...] = (),
    seq: int = 1,
    connection: ConnectionFacts | None = None,
    start_ns: int = 10 * MS,
) -> RequestTrace:
    """A trace whose stages follow each other with the given (name, duration ns)."""
    stages, at = [], start_ns
    for name, ns in plan:
        stages.append(Stage(name, LAYER_OF.get(name, "kernel"), at, at + ns))
        at += ns
    return RequestTrace(
        id=id,
        pid=100,
        fd=9,
        conn_id=3,
        seq=seq,
        method="GET",
        path=path,
        status=200,
        client=("127.0.0.1", 51000),
        server=("127.0.0.1", 8000),
        start_ns=start_ns,
        end_ns=at,
        complete=complete,
        stages=tuple(stages),
        notes=notes,
        connection=connection
        or ConnectionFacts(
            handshake_us=35.0, accept_queue_us=120.0, srtt_us=28, rcv_wnd=65_483, snd_wnd=65_536
        ),
        details={"recv_calls": 1, "recv_bytes": 120, "segments": 1, "send_calls": 1},
        query=query,
        blame=blame,
    )


LOOPBACK_SLEEP = [
    ("backlog", 3 * US),
    ("softirq", 2 * US),
    ("ip_tcp", 9 * US),
    ("wakeup", 40 * US),
    ("event_loop", 6 * US),
    ("recv", 5 * US),
    ("parse", 30 * US),
    ("loop_queue", 80 * US),
    ("app", 20_300 * US),
    ("handoff", 7 * US),
    ("send", 25 * US),
]


def mermaid_blocks(markdown: str) -> list[str]:
    tokens = MarkdownIt("commonmark").parse(markdown)
    return [t.content for t in tokens if t.type == "fence" and t.info.strip() == "mermaid"]


def check_mermaid(source: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Every line is one of the statement forms; returns the participants and the notes
    (participants over, text) with Mermaid's entity codes decoded."""
    lines = source.rstrip("\n").split("\n")
    assert lines[0] == "sequenceDiagram"
    participants: dict[str, str] = {}
    notes: list[tuple[str, str]] = []
    for line in lines[1:]:
        if match := PARTICIPANT_LINE.match(line):
            participants[match[1]] = match[2]
        elif match := MESSAGE_LINE.match(line):
            assert match[1] in participants and match[3] in participants, line
            assert ";" not in match[4].replace("#59;", "").replace("#35;", "").replace(
                "#lt;", ""
            ).replace("#gt;", ""), line
        elif match := NOTE_LINE.match(line):
            over = [p for p in (match[1], match[2]) if p]
            assert all(p in participants for p in over), line
            notes.append((",".join(over), decode(match[3])))
        else:
            raise AssertionError(f"not a statement the generator writes: {line!r}")
    return participants, notes


def decode(text: str) -> str:
    for code, char in (("#lt;", "<"), ("#gt;", ">"), ("#59;", ";"), ("#35;", "#")):
        text = text.replace(code, char)
    return text


def stage_notes(trace: RequestTrace, notes: list[tuple[str, str]]) -> list[str]:
    """The notes that name a stage of the trace (first line of each), in order."""
    names = {stage.name for stage in trace.stages}
    out = []
    for _, text in notes:
        first = text.split("<br/>")[0]
        if first.split(" ")[0] in names:
            out.append(first)
    return out


# -- the registry is covered --------------------------------------------------------------


def test_every_stage_has_an_actor_and_exactly_one_section() -> None:
    drawn = set(STAGE_NAMES) - {"unobserved"}
    assert drawn <= set(STAGE_ACTORS)
    placed = [name for _, _, names in SECTIONS for name in names]
    assert sorted(placed) == sorted(drawn)  # each once, none missing
    assert [name for _, name in PARTICIPANTS] == [
        "Client",
        "NIC",
        "Kernel",
        "Event loop",
        "Server",
        "App",
    ]


# -- choosing the request -----------------------------------------------------------------


def test_default_is_the_slowest_complete_request_and_says_so() -> None:
    fast = trace_with([("app", 1 * MS)], id=1)
    slow_incomplete = trace_with([("app", 90 * MS)], id=2, complete=False)
    slow = trace_with([("app", 30 * MS)], id=3)

    choice = choose_request([fast, slow_incomplete, slow])

    assert choice.trace.id == 3
    assert choice.why == "the slowest complete request of the 3 in the recording"


def test_selectors_request_id_path_glob_and_query() -> None:
    traces = [
        trace_with([("app", 5 * MS)], id=1, path="/hello", query=""),
        trace_with([("app", 20 * MS)], id=2, path="/sleep", query="ms=20"),
        trace_with([("app", 40 * MS)], id=3, path="/sleep", query="ms=40"),
    ]
    assert choose_request(traces, request_id=1).trace.id == 1
    assert choose_request(traces, path="/hello").trace.id == 1
    assert choose_request(traces, path="/sleep").trace.id == 3
    assert choose_request(traces, path="/sleep?ms=20").trace.id == 2  # with its query
    assert "of the 2 whose path matches /sl*" in choose_request(traces, path="/sl*").why
    with pytest.raises(NoSuchRequest, match=r"no request has id 9 \(ids run from 1 to 3\)"):
        choose_request(traces, request_id=9)
    with pytest.raises(NoSuchRequest, match="matches '/nope'"):
        choose_request(traces, path="/nope")
    with pytest.raises(NoSuchRequest, match="no requests"):
        choose_request([])


def test_only_incomplete_requests_the_slowest_is_explained_and_flagged() -> None:
    traces = [trace_with([("app", n * MS)], id=n, complete=False) for n in (1, 2)]
    choice = choose_request(traces)
    assert choice.trace.id == 2 and "none of them is complete" in choice.why


# -- the Mermaid diagram --------------------------------------------------------------------


def test_diagram_has_the_participants_and_one_note_per_stage_with_its_duration() -> None:
    trace = trace_with(LOOPBACK_SLEEP)

    participants, notes = check_mermaid(sequence_diagram(trace))

    assert list(participants.values()) == ["Client", "NIC", "Kernel", "Event loop", "Server", "App"]
    expected = [f"{s.name} {format_duration(s.duration_ns)}" for s in trace.stages]
    assert stage_notes(trace, notes) == expected
    assert ("A", "app 20.3 ms") in notes
    texts = [text for _, text in notes]
    assert "handshake 35 µs" in texts and "accept queue 120 µs" in texts  # first request


def test_diagram_of_a_real_nic_request_starts_at_the_nic_and_draws_gaps_and_holders() -> None:
    trace = trace_with(
        [
            ("nic_irq", 4 * US),
            ("softirq", 3 * US),
            ("ip_tcp", 10 * US),
            ("loop_busy", 5 * MS),
            ("event_loop", 6 * US),
            ("recv", 5 * US),
            ("unobserved", 300 * US),
            ("parse", 30 * US),
            ("app", 1 * MS),
            ("send", 25 * US),
        ],
        notes=("unobserved: recv → parse: a hook record was lost",),
        blame=(Blame("loop_busy", 41, "GET", "/burn", 4 * MS), Blame("loop_busy", 0, "", "", MS)),
        seq=4,
        connection=ConnectionFacts(handshake_us=50.0, closed_by="client"),
    )

    source = sequence_diagram(trace)
    _, notes = check_mermaid(source)

    assert "C->>N: GET /sleep?ms=20" in source
    assert stage_notes(trace, notes) == [
        f"{s.name} {format_duration(s.duration_ns)}" for s in trace.stages
    ]
    busy = next(text for over, text in notes if text.startswith("loop_busy"))
    assert "loop held by GET /burn (request 41) 4,000 µs" in busy and "other work 1,000 µs" in busy
    assert any("opened earlier" in text and "request 4" in text for _, text in notes)
    assert "C->>K: FIN (the client closed the connection)" in source


def test_mermaid_text_is_one_line_and_escapes_syntax() -> None:
    assert mermaid_text("GET /a;b#c<d>\n e") == "GET /a#59;b#35;c#lt;d#gt; e"
    trace = trace_with([("app", MS)], path="/x;y#<script>", query="")
    check_mermaid(sequence_diagram(trace))


# -- the handout ----------------------------------------------------------------------------


def test_handout_is_markdown_with_one_mermaid_block_and_every_layer() -> None:
    trace = trace_with(LOOPBACK_SLEEP)
    recording = Recording(HEADER, [trace], {"type": "footer"}, [], "/tmp/run.jsonl")

    text = handout(recording, Choice(trace, "the slowest complete request of the 1"))

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    headings = [
        tokens[i + 1].content
        for i, t in enumerate(tokens)
        if t.type == "heading_open" and t.tag == "h2"
    ]
    assert headings == [
        "The journey at a glance",
        "1. NIC and interrupts",
        "2. TCP/IP and the socket buffer",
        "3. Wakeup and epoll",
        "4. The event loop",
        "5. recv, parse, app, send",
        "6. The connection",
        "7. What nobody saw",
        "Notes of the trace",
    ]
    assert any(t.type == "table_open" for t in tokens)  # the timeline table
    (block,) = mermaid_blocks(text)
    assert block == sequence_diagram(trace)
    assert "This is the slowest complete request of the 1." in text
    assert "mode asgi" in text and "host box" in text  # what the header has
    # the lesson of each stage, with this request's numbers
    assert "### app — the ASGI app: 20.3 ms (" in text
    assert "Your ASGI app handled GET /sleep" in text and "**Slow when:**" in text
    # a stage that did not happen here says so, with the trace's reason
    assert "### nic_irq — NIC interrupt → softirq: not observed" in text
    assert "Not observed for this request: no hardware interrupt: packet came from lo" in text
    # optional stages that did not happen are left out
    assert "### body" not in text and "### loop_busy" not in text
    assert "- **handshake**: 35 µs" in text and "still open when this request completed" in text


def test_handout_names_the_loop_holder_and_the_unobserved_gap() -> None:
    trace = trace_with(
        [
            ("backlog", 3 * US),
            ("softirq", 2 * US),
            ("ip_tcp", 9 * US),
            ("loop_busy", 5 * MS),
            ("event_loop", 6 * US),
            ("recv", 5 * US),
            ("unobserved", 400 * US),
            ("parse", 30 * US),
            ("app", 1 * MS),
            ("send", 25 * US),
        ],
        notes=(
            LOOPBACK_NOTE,
            "wakeup: the event loop was not asleep when the data arrived (it was running other"
            " work; see loop_busy)",
            "unobserved: recv → parse: a hook record was lost",
        ),
        blame=(Blame("loop_busy", 41, "GET", "/burn", 5 * MS),),
    )
    recording = Recording(None, [trace], None, [], "")

    text = handout(recording, Choice(trace, "request 1, as asked"))

    assert "### loop_busy — event loop busy when the data arrived: 5,000 µs" in text
    assert "The loop was held by GET /burn (request 41) for 5,000 µs." in text
    assert "### unobserved: 400 µs" in text
    assert "Between recv → parse: a hook record was lost." in text
    # loop_busy took the place of wakeup, and the handout says why wakeup is missing
    assert "### wakeup — wakeup of the server thread: not observed" in text
    assert "Not observed for this request: the event loop was not asleep" in text


def test_run_explain_writes_a_private_file_and_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.jsonl"
    with Recorder(str(path), HEADER) as recorder:
        recorder.write(trace_with(LOOPBACK_SLEEP, id=5))
        recorder.write(trace_with([("app", MS)], id=6, path="/hello", query=""))
        recorder.close({})
    out = tmp_path / "handout.md"

    assert run_explain(str(path), output=str(out)) == 0
    assert "request 5 (the slowest complete request of the 2" in capsys.readouterr().err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith("# How one request travelled: GET `/sleep?ms=20`")

    assert run_explain(str(path), request_id=6) == 0
    assert "GET `/hello`" in capsys.readouterr().out
    assert run_explain(str(path), request_id=99) == 2
    assert "no request has id 99" in capsys.readouterr().err
    assert run_explain(str(tmp_path / "missing.jsonl")) == 2


# -- a real recording -----------------------------------------------------------------------


@pytest.mark.bpf
@pytest.mark.timeout(180)
def test_explain_a_real_recording_of_hello_and_sleep(tmp_path: Path) -> None:
    port = free_port()
    recording = tmp_path / "accuracy.jsonl"
    args = ("--port", str(port), "--record", str(recording), "--no-access-log")
    with reqtrace_run("tests.server_apps.accuracy_app:app", *args) as process:
        wait_listening(port, process)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for target in ("/hello", "/sleep?ms=20", "/hello", "/sleep?ms=20", "/hello"):
            connection.request("GET", target)
            assert connection.getresponse().read()
        connection.close()
        stop(process)
    loaded = load_recording(str(recording))
    assert loaded.footer is not None

    # Default: the slowest complete request (here often wait_listening's GET /, which came
    # while the app was starting); every handout's notes are the recorded durations.
    complete = [t for t in loaded.traces if t.complete]
    slowest = max(complete, key=lambda t: (t.total_ns, -t.id))
    sleeps = [t for t in complete if t.path == "/sleep"]
    assert len(sleeps) == 2
    for selector, chosen in ((None, slowest), ("/sleep", max(sleeps, key=lambda t: t.total_ns))):
        out = tmp_path / f"handout-{selector is None}.md"
        assert run_explain(str(recording), path_glob=selector, output=str(out)) == 0
        text = out.read_text()
        assert f"GET `{full_path(chosen)}`" in text.splitlines()[0]
        assert f"Request {chosen.id} from 127.0.0.1:" in text
        (block,) = mermaid_blocks(text)
        participants, notes = check_mermaid(block)
        assert list(participants.values()) == [
            "Client", "NIC", "Kernel", "Event loop", "Server", "App",
        ]  # fmt: skip
        # one note per observed stage, its duration the recorded one
        assert stage_notes(chosen, notes) == [
            f"{s.name} {format_duration(s.duration_ns)}" for s in chosen.stages
        ]
        for stage in chosen.stages:
            if stage.name != "unobserved":
                assert f"### {stage.name} — " in text
        # loopback: the NIC interrupt is said not to be observed, with the trace's reason
        assert "### nic_irq — NIC interrupt → softirq: not observed" in text
        assert "packet came from lo (software device)" in text
    assert "the slowest complete request of the 2 whose path matches /sleep" in text
    app = chosen.stage("app")
    # asyncio may end a 20 ms sleep up to 1 ms early (tests/test_accuracy.py measured it)
    assert app is not None and 19 * MS <= app.duration_ns < 26 * MS
    assert f"### app — the ASGI app: {format_duration(app.duration_ns)}" in text
