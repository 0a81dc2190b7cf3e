"""Network interfaces of this host and the driver behind each (for the NIC-driver probe)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from probes.catalog import ProbePoint, driver_poll_point


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


def _has_bus_device(name: str) -> bool:
    return Path("/sys/class/net", name, "device").exists()


def nic_driver_points(hardware_only: bool = False) -> tuple[list[ProbePoint], dict[str, str]]:
    """Driver poll points for the up, non-loopback interfaces of this namespace, and for
    each the plan's note when its driver's poll function cannot be attached.

    hardware_only: only devices with a bus device behind them (a NIC, virtio-net
    included) and a known poll function: what a run attaches, stable while tests and
    containers come and go with their veths and bridges."""
    try:
        interfaces = list_interfaces()
    except Exception:  # netlink unavailable: the catalog points still stand
        return [], {}
    points, notes = [], {}
    for iface in interfaces:
        if iface.loopback or not iface.up:
            continue
        point = driver_poll_point(iface.name, iface.driver)
        if hardware_only and not (point.strategies and _has_bus_device(iface.name)):
            continue
        points.append(point)
        notes[point.name] = (
            f"covered by napi:napi_poll (per-poll device name and end time); the driver's own "
            f"poll function ({iface.driver or 'unknown driver'}) cannot be attached here"
        )
    return points, notes
