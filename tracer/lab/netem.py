"""Whether this kernel has netem, found by trying it, and the tc arguments that use it.

Our build machines lack netem (CONFIG_NET_SCH_NETEM unset); most users' kernels have it as
a module that `tc` autoloads. Config files and module lists lie (built-in, not shipped,
blacklisted), so the answer comes from a real trial: add a netem qdisc to the loopback
device of a scratch namespace, which touches nothing anyone else uses.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess

from tracer.lab.impairment import Impairment

FORCE_DELAY_LINE_ENV = "REQTRACE_LAB_DELAY_LINE"


def delay_line_forced() -> bool:
    """REQTRACE_LAB_DELAY_LINE=1 picks the delay line even where netem exists (to test it)."""
    return os.environ.get(FORCE_DELAY_LINE_ENV) == "1"


@functools.cache
def _netem_trial() -> bool:
    if shutil.which("tc") is None or os.geteuid() != 0:
        return False
    from pyroute2 import netns

    scratch = f"rtnetem{os.getpid()}"
    try:
        netns.create(scratch)
    except Exception:
        return False
    try:
        result = subprocess.run(
            ["tc", "-n", scratch, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return result.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        with contextlib.suppress(Exception):
            netns.remove(scratch)


def netem_available() -> bool:
    """True when a netem qdisc can be added here (tried once per process, then cached)."""
    return _netem_trial()


def netem_arguments(impairment: Impairment) -> list[str]:
    """`netem delay 5ms 1ms loss 1%` (jitter is uniform: netem's default distribution)."""
    arguments = ["netem"]
    if impairment.delay_ms or impairment.jitter_ms:
        arguments += ["delay", f"{impairment.delay_ms * 1000:.0f}us"]
        if impairment.jitter_ms:
            arguments.append(f"{impairment.jitter_ms * 1000:.0f}us")
    if impairment.loss_pct:
        arguments += ["loss", f"{impairment.loss_pct:g}%"]
    arguments += ["limit", "10000"]
    return arguments
