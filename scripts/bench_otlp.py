"""Benchmark the OTLP exporter offline: CPU per request of `reqtrace run --otlp-endpoint`.

What the exporter's worker thread (tracer/session/otlp_sink.py) does per batch, minus the
HTTP POST itself: turn request traces into spans (tracer/recording/otlp.py, SpanMapper) and
encode them into the OTLP protobuf request (the exporter package's encode_spans, then
SerializeToString). Measured with time.process_time() over batches of 256 requests, the
sink's batch size. The traces are the correlator's output for the synthetic keep-alive
workload of scripts/bench_correlator.py (kernel receive path, read, parse, app, send: ~11
stages each), with the request headers a curl client sends and, on every other request, a
W3C traceparent.

    python -m scripts.bench_otlp [--requests N] [--rounds R]     (or scripts/bench_otlp)

`measure()` returns the median µs of CPU per request, for scripts/bench's table; compare it
with the untraced server's CPU per request measured in the same run (only ratios compare
across this project's machines).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tracer.correlate.correlator import Correlator  # noqa: E402
from tracer.model.trace import RequestTrace  # noqa: E402

BATCH = 256  # tracer/session/otlp_sink.py BATCH_SIZE
CLOCK_OFFSET_NS = 1_796_315_172_151_848_528
HEADER = {
    "host": "bench",
    "kernel": "6.18.0",
    "app": "bench:app",
    "server_pid": 4242,
    "started_unix_ns": CLOCK_OFFSET_NS + 10**12,
    "clock_offset_ns": CLOCK_OFFSET_NS,
}


def traces(requests: int = 2_048) -> list[RequestTrace]:
    """The correlator's traces of the bench_correlator workload, with curl's headers."""
    from scripts.bench_correlator import workload

    correlator = Correlator()
    out: list[RequestTrace] = []
    for record in workload(requests, 16, 2_000):
        out.extend(correlator.feed(record))
    out.extend(correlator.flush())
    headers = (("host", "127.0.0.1:8000"), ("user-agent", "curl/7.88.1"), ("accept", "*/*"))
    traced = (*headers, ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
    return [trace._replace(headers=traced if i % 2 else headers) for i, trace in enumerate(out)]


def one_round(sample: list[RequestTrace]) -> tuple[float, float, int]:
    """(s of CPU building spans, s encoding them, spans made) for the whole sample."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from tracer.recording.otlp import SpanMapper, otlp_resource

    mapper = SpanMapper(otlp_resource(HEADER), CLOCK_OFFSET_NS)
    building = encoding = 0.0
    spans_made = 0
    for start in range(0, len(sample), BATCH):
        began = time.process_time()
        spans = mapper.spans_of(sample[start : start + BATCH])
        built = time.process_time()
        encode_spans(spans).SerializeToString()
        encoding += time.process_time() - built
        building += built - began
        spans_made += len(spans)
    return building, encoding, spans_made


def measure_parts(requests: int = 2_048, rounds: int = 5) -> dict[str, float]:
    """Median µs per request of span building, encoding and both; spans per request."""
    sample = traces(requests)
    one_round(sample[:BATCH])  # warm up imports and caches
    builds, encodes, totals = [], [], []
    spans_made = 0
    for _ in range(rounds):
        building, encoding, spans_made = one_round(sample)
        builds.append(building / len(sample) * 1e6)
        encodes.append(encoding / len(sample) * 1e6)
        totals.append((building + encoding) / len(sample) * 1e6)
    return {
        "us_per_request": statistics.median(totals),
        "build_us_per_request": statistics.median(builds),
        "encode_us_per_request": statistics.median(encodes),
        "spans_per_request": spans_made / len(sample),
        "requests": float(len(sample)),
    }


def measure(requests: int = 2_048, rounds: int = 5) -> float:
    """Median µs of CPU per request to build and encode its OTLP spans (no network)."""
    return measure_parts(requests, rounds)["us_per_request"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2_048)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    parts = measure_parts(args.requests, args.rounds)
    print(
        f"OTLP export CPU: {parts['us_per_request']:.1f} µs per request"
        f" (span building {parts['build_us_per_request']:.1f},"
        f" protobuf encoding {parts['encode_us_per_request']:.1f});"
        f" {parts['spans_per_request']:.1f} spans per request,"
        f" {parts['requests']:.0f} requests, median of {args.rounds} rounds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
