"""Small operations on lab devices and namespaces that pyroute2 does not cover well:
offloads (ethtool), sysctls, and finding the processes inside a namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from tracer.lab.errors import LabError

NETNS_DIR = Path("/run/netns")
# Segmentation offloads would hand the delay line 64 KB "frames" it cannot resend, and
# checksum offload would hand it frames whose checksum the receiver never sees filled in.
OFFLOADS = ("tso", "gso", "gro", "tx", "rx")


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    """`argv` run inside `netns` (`ip netns exec` execs it: the pid stays the same)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)


def disable_offloads(netns: str | None, device: str, required: bool) -> bool:
    """`ethtool -K DEV tso off gso off gro off tx off rx off`; False when not possible.

    Required for the delay line (see OFFLOADS); merely tidy for a plain veth pair, where a
    missing ethtool is no reason to refuse the lab.
    """
    if shutil.which("ethtool") is None:
        if required:
            raise LabError("ethtool is needed to prepare the delay line; install ethtool")
        return False
    argv = ["ethtool", "-K", device]
    for feature in OFFLOADS:
        argv += [feature, "off"]
    result = _run(in_netns(netns, argv))
    # ethtool exits 0, or nonzero with "Could not change any device features" when all
    # were already off; check what the device reports instead of trusting the status.
    features = _run(in_netns(netns, ["ethtool", "-k", device])).stdout
    still_on = [
        line.split(":")[0].strip()
        for line in features.splitlines()
        if line.split(":")[0].strip()
        in (
            "tcp-segmentation-offload",
            "generic-segmentation-offload",
            "generic-receive-offload",
            "tx-checksumming",
        )
        and line.split(":", 1)[1].strip().startswith("on")
    ]
    if still_on and required:
        raise LabError(
            f"cannot turn off {', '.join(still_on)} on {device}: {result.stderr.strip()}"
        )
    return not still_on


def set_sysctl(netns: str | None, key: str, value: str) -> None:
    """Write a sysctl in a namespace (the /proc/sys view follows the writer's netns)."""
    result = _run(in_netns(netns, ["sysctl", "-q", "-w", f"{key}={value}"]))
    if result.returncode != 0:
        raise LabError(f"cannot set {key}={value}: {result.stderr.strip() or 'sysctl failed'}")


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def pids_in_netns(name: str) -> list[int]:
    """Processes whose network namespace is /run/netns/NAME (what `ip netns pids` does)."""
    try:
        target = os.stat(NETNS_DIR / name)
    except OSError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            st = os.stat(entry / "ns" / "net")
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                pids.append(int(entry.name))
    return pids


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def process_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
