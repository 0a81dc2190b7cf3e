"""Network interfaces of this host and the driver behind each (for the NIC-driver probe)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    driver: str  # "" when unknown
    up: bool
    loopback: bool


def _driver_from_sysfs(name: str) -> str:
    link = Path("/sys/class/net", name, "device", "driver")
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return ""


def _driver_from_ethtool(name: str) -> str:
    if not shutil.which("ethtool"):
        return ""
    try:
        out = subprocess.run(
            ["ethtool", "-i", name], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "driver":
            return value.strip()
    return ""


def list_interfaces() -> list[Interface]:
    """Interfaces of the current network namespace, with their drivers.

    Virtual devices (veth, bridge, ifb, ...) report their kind through rtnetlink (pyroute2);
    hardware devices name their driver in sysfs; ethtool -i is the last resort.
    """
    from pyroute2 import IPRoute

    interfaces = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
            loopback = bool(link["flags"] & 0x8)  # IFF_LOOPBACK
            driver = kind or _driver_from_sysfs(name) or _driver_from_ethtool(name)
            up = bool(link["flags"] & 0x1)  # IFF_UP
            interfaces.append(Interface(name, driver, up, loopback))
    return interfaces
