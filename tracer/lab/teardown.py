"""Tear a lab down from its names alone: after a crash, a SIGKILL or a lost state file.

Order matters: the forwarder goes first (a process inside the router namespace keeps that
namespace, and the veths in it, alive after its name is removed); then the root-namespace
devices (deleting a veth deletes its peer, wherever it is); then the namespace names; then
the files. Each step tolerates "already gone", so `lab down` can run any number of times.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from tracer.lab import devices
from tracer.lab.names import LabNames
from tracer.lab.state import load_state, remove_files, state_path

FORWARDER_MODULE = "tracer.lab.delay_line"
TERM_GRACE_S = 3.0


def _is_our_forwarder(pid: int, names: LabNames) -> bool:
    """A pid from a state file may have been reused: trust it only if its argv says so."""
    argv = devices.process_cmdline(pid)
    return FORWARDER_MODULE in argv and names.router_server_device in argv


def _stop(pids: list[int]) -> list[int]:
    """SIGTERM, wait a little, then SIGKILL what is left; returns the pids that existed."""
    existed = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            existed.append(pid)
    deadline = time.monotonic() + TERM_GRACE_S
    while time.monotonic() < deadline and any(devices.process_alive(p) for p in existed):
        time.sleep(0.02)
    for pid in existed:
        if devices.process_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return existed


def lab_exists(prefix: str) -> bool:
    """True when anything of the lab `prefix` is present (state file, namespace or device)."""
    from pyroute2 import IPRoute

    names = LabNames(prefix)
    if state_path(prefix).exists():
        return True
    if devices.netns_exists(names.client_netns) or devices.netns_exists(names.router_netns):
        return True
    with IPRoute() as ipr:
        return any(
            ipr.link_lookup(ifname=name)
            for name in (names.server_device, names.client_device, names.router_server_device)
        )


def lab_down(prefix: str = "rtlab") -> list[str]:
    """Remove whatever exists of the lab `prefix`; returns what was removed, in order."""
    from pyroute2 import IPRoute, netns

    names = LabNames(prefix)
    removed: list[str] = []
    state = load_state(prefix)
    forwarders = set(devices.pids_in_netns(names.router_netns))
    if state and state.forwarder_pid and _is_our_forwarder(state.forwarder_pid, names):
        forwarders.add(state.forwarder_pid)
    removed += [f"delay line process {pid}" for pid in _stop(sorted(forwarders))]
    with IPRoute() as ipr:
        # A crash half-way through `lab up` can leave any of them in the root namespace.
        for name in (
            names.server_device,
            names.client_device,
            names.router_server_device,
            names.router_client_device,
        ):
            for index in ipr.link_lookup(ifname=name):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=index)
                    removed.append(f"device {name}")
    for name in (names.router_netns, names.client_netns):
        if devices.netns_exists(name):
            with contextlib.suppress(Exception):
                netns.remove(name)
                removed.append(f"network namespace {name}")
    removed += [f"file {path}" for path in remove_files(prefix)]
    return removed
