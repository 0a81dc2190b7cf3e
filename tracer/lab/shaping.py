"""The tc qdiscs on a lab veth's egress: tbf for the rate, netem (when the kernel has it)
for delay, jitter and loss, or both (netem at the root, tbf as its child).

Why tbf and not htb: one flow, one rate, and tbf's parameters map directly onto what a
teacher wants to explain (a bucket of `burst` bytes refilled at `rate`, a queue that holds
`latency` worth of traffic). Both exist on every kernel we know, netem does not.
"""

from __future__ import annotations

import subprocess

from tracer.lab.errors import LabError
from tracer.lab.impairment import Impairment, format_rate
from tracer.lab.netem import netem_arguments

FRAME_BYTES = 1514  # an Ethernet frame at MTU 1500, what the bucket must hold at least
TBF_LATENCY_MS = 50  # queue length in time: enough for TCP to keep the link busy


def tbf_arguments(rate_mbit: float) -> list[str]:
    """`tbf rate R burst B latency 50ms`.

    burst: 4 ms of traffic but at least two frames. A bucket smaller than a frame would
    stall the link; a large one lets the first burst through at wire speed, which skews
    short transfers (at 8mbit the 4 ms rule gives two frames, 3 KB: nothing to notice).
    """
    rate_bytes_per_s = rate_mbit * 1e6 / 8
    burst = max(2 * FRAME_BYTES, round(rate_bytes_per_s * 0.004))
    return ["tbf", "rate", format_rate(rate_mbit), "burst", str(burst), "latency", "50ms"]


def qdisc_commands(device: str, impairment: Impairment, use_netem: bool) -> list[list[str]]:
    """The `tc qdisc add` argument lists for one egress (without the `tc -n NS` part).

    With netem and a rate: netem is the root (it holds frames for their delay), tbf its
    child in class 1:1 (it paces what netem releases), as tc-netem(8) recommends.
    """
    base = ["qdisc", "add", "dev", device]
    timing = use_netem and impairment.shapes_timing
    rate = impairment.rate_mbit
    if timing and rate is not None:
        return [
            [*base, "root", "handle", "1:", *netem_arguments(impairment)],
            [*base, "parent", "1:1", "handle", "10:", *tbf_arguments(rate)],
        ]
    if timing:
        return [[*base, "root", "handle", "1:", *netem_arguments(impairment)]]
    if rate is not None:
        return [[*base, "root", "handle", "1:", *tbf_arguments(rate)]]
    return []


def run_tc(netns: str | None, arguments: list[str]) -> None:
    """Run `tc [-n NETNS] ARGS`; a failure becomes a LabError quoting tc's first error line."""
    argv = ["tc", *(["-n", netns] if netns else []), *arguments]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except FileNotFoundError:
        raise LabError("tc (iproute2) is needed to shape traffic; install iproute2") from None
    if result.returncode != 0:
        first = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[0]
        raise LabError(f"`{' '.join(argv)}` failed: {first}")


def show_qdiscs(netns: str | None, device: str) -> str:
    """`tc qdisc show dev DEVICE` (for `lab status`); empty when it cannot be read."""
    argv = ["tc", *(["-n", netns] if netns else []), "qdisc", "show", "dev", device]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""
