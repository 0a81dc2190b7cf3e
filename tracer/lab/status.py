"""What exists of a lab right now, for `reqtrace lab status`: read from the machine itself
(namespaces, devices, qdiscs, the forwarder's process and counters), with the state file
only supplying what cannot be observed (the addresses asked for, the mechanism sentences).
"""

from __future__ import annotations

from typing import Any

from tracer.lab import devices, shaping
from tracer.lab.names import LabNames
from tracer.lab.state import load_state, log_path, read_counters


def _root_devices(names: LabNames) -> list[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [
            name
            for name in (names.server_device, names.client_device, names.router_server_device)
            if ipr.link_lookup(ifname=name)
        ]


def _counter_lines(counters: dict[str, Any]) -> list[str]:
    lines = []
    arrows = {"server": "server -> client", "client": "client -> server"}
    for direction, values in counters.get("directions", {}).items():
        lines.append(
            f"  {arrows.get(direction, direction)}: {values.get('forwarded', 0)} forwarded, "
            f"{values.get('dropped', 0)} dropped, {values.get('send_errors', 0)} send errors, "
            f"{values.get('queued', 0)} queued (max {values.get('max_queued', 0)})"
        )
    return lines


def describe_lab(prefix: str) -> list[str] | None:
    """Lines describing the lab `prefix`, or None when nothing of it exists."""
    names = LabNames(prefix)
    state = load_state(prefix)
    namespaces = [
        name for name in (names.client_netns, names.router_netns) if devices.netns_exists(name)
    ]
    root_devices = _root_devices(names)
    if state is None and not namespaces and not root_devices:
        return None
    lines = [f"lab {prefix}:"]
    if state:
        lines.append(f"  server host: root namespace, {names.server_device} {state.server_addr}")
        lines.append(
            f"  client host: netns {names.client_netns}, {names.client_device} {state.client_addr}"
        )
        lines.append(f"  mode: {state.mode}")
    else:
        lines.append("  no state file: this lab is left over from a crash; `lab down` removes it")
    lines.append(f"  namespaces: {', '.join(namespaces) or 'none'}")
    lines.append(f"  devices in the root namespace: {', '.join(root_devices) or 'none'}")
    if state:
        lines.append("mechanisms:")
        lines += [f"  {sentence}" for sentence in state.mechanisms]
    for netns, device in ((None, names.server_device), (names.client_netns, names.client_device)):
        if (netns is None and device in root_devices) or (netns in namespaces):
            qdiscs = shaping.show_qdiscs(netns, device)
            where = f" (netns {netns})" if netns else ""
            for qdisc in qdiscs.splitlines():
                lines.append(f"  qdisc on {device}{where}: {qdisc.strip()}")
    if state and state.mode == "delay-line":
        pid = state.forwarder_pid
        alive = pid is not None and devices.process_alive(pid)
        running = "running" if alive else "NOT running (the lab passes no traffic)"
        lines.append(f"delay line: pid {pid} {running}; log {log_path(prefix)}")
        counters = read_counters(prefix)
        if counters:
            lines += _counter_lines(counters)
    return lines
