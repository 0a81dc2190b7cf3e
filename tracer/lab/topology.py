"""Build and tear down the lab: a client host in a network namespace, joined to this (the
server) namespace by veth pairs, with the link's impairments installed.

    direct (no impairment, a rate only, or netem available):
        root ns: <p>-srv 10.77.0.1  <== veth ==>  <p>-client ns: <p>-cli 10.77.0.2

    delay line (delay/jitter/loss asked for and no netem in this kernel):
        root ns: <p>-srv  <== veth ==>  <p>-router ns: <p>-r0  [forwarder]  <p>-r1
                                                                  <== veth ==>  <p>-cli

The server is the root namespace so `reqtrace run APP --host 10.77.0.1` traces as usual;
the router namespace has no addresses: the forwarder bridges its two veths at layer 2.
Rates are always a tbf on the sending side's veth egress. Everything is named after the
prefix, and any failure half-way tears down what was built before the error is raised.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from tracer.lab import devices, shaping
from tracer.lab.errors import LabError, require_root
from tracer.lab.impairment import Impairment, format_rate
from tracer.lab.names import LabNames
from tracer.lab.netem import FORCE_DELAY_LINE_ENV, delay_line_forced, netem_available
from tracer.lab.state import LabState, counters_path, log_path, save_state
from tracer.lab.teardown import lab_down, lab_exists

FORWARDER_READY_TIMEOUT_S = 15.0
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LabInfo:
    """What a running lab looks like to its user."""

    prefix: str
    server_addr: str  # in the root namespace
    client_addr: str
    client_netns: str
    server_device: str  # the root-namespace veth the traffic crosses
    mechanisms: list[str]  # human sentences, printed by `lab up`/`lab status`


def _addresses(subnet: str) -> tuple[str, str, int]:
    try:
        network = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise LabError(f"the lab subnet must be an IPv4 network like 10.77.0.0/24: {exc}") from None
    if network.prefixlen > 30:
        raise LabError(f"the lab subnet {subnet} is too small: it needs two host addresses")
    return str(network[1]), str(network[2]), network.prefixlen


def _check_subnet_free(network: str) -> None:
    """Refuse a subnet this host already uses, rather than shadowing its routes."""
    from pyroute2 import IPRoute

    wanted = ipaddress.IPv4Network(network)
    with IPRoute() as ipr:
        for addr in ipr.get_addr(family=2):
            address = addr.get_attr("IFA_ADDRESS")
            used = ipaddress.IPv4Network(f"{address}/{addr['prefixlen']}", strict=False)
            if used.overlaps(wanted):
                label = addr.get_attr("IFA_LABEL") or f"index {addr['index']}"
                raise LabError(
                    f"the lab subnet {network} overlaps {address}/{addr['prefixlen']} on "
                    f"{label}; pick another subnet"
                )


class Lab:
    """A lab you bring up and tear down; as a context manager it always tears down."""

    def __init__(
        self,
        prefix: str = "rtlab",
        subnet: str = "10.77.0.0/24",
        impairment: Impairment = Impairment(),  # noqa: B008 - frozen, so sharing is safe
    ) -> None:
        self.names = LabNames(prefix)
        self.prefix = prefix
        self.subnet = subnet
        self.server_addr, self.client_addr, self.prefixlen = _addresses(subnet)
        self.impairment = impairment
        self._forwarder: subprocess.Popen[str] | None = None

    # -- public API ---------------------------------------------------------------------

    def __enter__(self) -> LabInfo:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self) -> LabInfo:
        """Build the lab; refuses when a lab with this prefix exists (LabError)."""
        require_root()
        if lab_exists(self.prefix):
            raise LabError(
                f"a lab with prefix {self.prefix!r} already exists; "
                f"run `reqtrace lab down --prefix {self.prefix}` first"
            )
        _check_subnet_free(self.subnet)
        delay_line = self.impairment.shapes_timing and (
            delay_line_forced() or not netem_available()
        )
        try:
            if delay_line:
                self._build_delay_line()
            else:
                self._build_direct()
            self._shape(use_netem=self.impairment.shapes_timing and not delay_line)
            mechanisms = self._mechanisms(delay_line)
            save_state(
                LabState(
                    prefix=self.prefix,
                    subnet=self.subnet,
                    server_addr=self.server_addr,
                    client_addr=self.client_addr,
                    mode="delay-line" if delay_line else "direct",
                    impairment=asdict(self.impairment),
                    mechanisms=mechanisms,
                    forwarder_pid=self._forwarder.pid if self._forwarder else None,
                    created_at=time.time(),
                    devices=self._devices(delay_line),
                )
            )
        except BaseException as exc:
            self.down()
            if isinstance(exc, LabError):
                raise
            if isinstance(exc, Exception):
                raise LabError(f"building the lab failed and was undone: {exc}") from exc
            raise
        return LabInfo(
            prefix=self.prefix,
            server_addr=self.server_addr,
            client_addr=self.client_addr,
            client_netns=self.names.client_netns,
            server_device=self.names.server_device,
            mechanisms=mechanisms,
        )

    def down(self) -> None:
        """Remove everything of this prefix; safe to call any number of times."""
        lab_down(self.prefix)
        if self._forwarder is not None:  # reap our own child so it leaves no zombie
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._forwarder.wait(timeout=5)
            self._forwarder = None

    def client_command(self, argv: list[str]) -> list[str]:
        """The argv that runs `argv` on the client host (inside its namespace)."""
        return devices.in_netns(self.names.client_netns, argv)

    # -- building -----------------------------------------------------------------------

    def _devices(self, delay_line: bool) -> list[str]:
        n = self.names
        if delay_line:
            return [
                n.server_device,
                n.router_server_device,
                n.router_client_device,
                n.client_device,
            ]
        return [n.server_device, n.client_device]

    def _build_direct(self) -> None:
        from pyroute2 import IPRoute, netns

        n = self.names
        netns.create(n.client_netns)
        with IPRoute() as ipr:
            ipr.link("add", ifname=n.server_device, kind="veth", peer=n.client_device)
            peer = ipr.link_lookup(ifname=n.client_device)[0]
            ipr.link("set", index=peer, net_ns_fd=n.client_netns)
        self._configure_ends()

    def _build_delay_line(self) -> None:
        from pyroute2 import IPRoute, NetNS, netns

        n = self.names
        netns.create(n.client_netns)
        netns.create(n.router_netns)
        with IPRoute() as ipr:
            ipr.link("add", ifname=n.server_device, kind="veth", peer=n.router_server_device)
            ipr.link("add", ifname=n.client_device, kind="veth", peer=n.router_client_device)
            for name, target in (
                (n.router_server_device, n.router_netns),
                (n.router_client_device, n.router_netns),
                (n.client_device, n.client_netns),
            ):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], net_ns_fd=target)
        # The router is a wire, not a host: no IPv6 link-local chatter, no addresses.
        devices.set_sysctl(n.router_netns, "net.ipv6.conf.all.disable_ipv6", "1")
        with NetNS(n.router_netns) as router:
            for name in ("lo", n.router_server_device, n.router_client_device):
                router.link("set", index=router.link_lookup(ifname=name)[0], state="up")
        for name in (n.router_server_device, n.router_client_device):
            devices.disable_offloads(n.router_netns, name, required=True)
        self._configure_ends(offloads_required=True)
        self._start_forwarder()

    def _configure_ends(self, offloads_required: bool = False) -> None:
        """Addresses, IPv4 only, offloads off and links up on the server and client veths."""
        from pyroute2 import IPRoute, NetNS

        n = self.names
        with contextlib.suppress(OSError):  # IPv6 may be absent: then there is no chatter
            devices.set_sysctl(None, f"net.ipv6.conf.{n.server_device}.disable_ipv6", "1")
        with contextlib.suppress(LabError):
            devices.set_sysctl(n.client_netns, "net.ipv6.conf.all.disable_ipv6", "1")
        devices.disable_offloads(None, n.server_device, required=offloads_required)
        devices.disable_offloads(n.client_netns, n.client_device, required=offloads_required)
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=n.server_device)[0]
            ipr.addr("add", index=index, address=self.server_addr, prefixlen=self.prefixlen)
            ipr.link("set", index=index, state="up")
        with NetNS(n.client_netns) as ns:
            index = ns.link_lookup(ifname=n.client_device)[0]
            ns.addr("add", index=index, address=self.client_addr, prefixlen=self.prefixlen)
            ns.link("set", index=index, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")

    def _start_forwarder(self) -> None:
        """Start the delay line detached in the router namespace; wait for its READY line."""
        n = self.names
        imp = self.impairment
        argv = [
            sys.executable,
            "-m",
            "tracer.lab.delay_line",
            "--server-dev",
            n.router_server_device,
            "--client-dev",
            n.router_client_device,
            "--delay-ms",
            repr(imp.delay_ms),
            "--jitter-ms",
            repr(imp.jitter_ms),
            "--loss-pct",
            repr(imp.loss_pct),
            "--side",
            imp.side,
            "--counters",
            str(counters_path(self.prefix)),
            *(["--seed", str(imp.seed)] if imp.seed is not None else []),
        ]
        log = log_path(self.prefix)
        log.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        python_path = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        with open(log, "a") as log_file:
            self._forwarder = subprocess.Popen(
                devices.in_netns(n.router_netns, argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                start_new_session=True,  # survives the terminal of `lab up`, and its Ctrl-C
                env={**os.environ, "PYTHONPATH": python_path},
                cwd="/",
            )
        assert self._forwarder.stdout is not None
        ready = _read_line(self._forwarder.stdout, FORWARDER_READY_TIMEOUT_S)
        self._forwarder.stdout.close()
        if ready.strip() != "READY":
            tail = _tail(log)
            raise LabError(f"the delay line did not start ({tail or 'no output'})")

    def _shape(self, use_netem: bool) -> None:
        n = self.names
        for direction, netns, device in (
            ("server", None, n.server_device),
            ("client", n.client_netns, n.client_device),
        ):
            if not self.impairment.impairs(direction):
                continue
            for arguments in shaping.qdisc_commands(device, self.impairment, use_netem):
                shaping.run_tc(netns, arguments)

    def _mechanisms(self, delay_line: bool) -> list[str]:
        n = self.names
        imp = self.impairment
        egress = {
            "server": f"{n.server_device} (server egress)",
            "client": f"{n.client_device} in netns {n.client_netns} (client egress)",
        }
        chosen = [egress[d] for d in ("server", "client") if imp.impairs(d)]
        sentences = []
        if delay_line:
            why = (
                f"forced by {FORCE_DELAY_LINE_ENV}=1"
                if delay_line_forced()
                else "this kernel has no netem"
            )
            pid = self._forwarder.pid if self._forwarder else "?"
            sentences.append(
                f"delay/jitter/loss: delay line (AF_PACKET forwarder pid {pid} in netns "
                f"{n.router_netns}; {why}): {imp.describe(rate=False)}"
            )
        elif imp.shapes_timing:
            sentences.append(
                f"delay/jitter/loss: netem on {' and '.join(chosen)}: {imp.describe(rate=False)}"
            )
        if imp.rate_mbit is not None:
            sentences.append(f"rate: tbf {format_rate(imp.rate_mbit)} on {' and '.join(chosen)}")
        if not sentences:
            sentences.append(
                f"no impairment: plain veth pair {n.server_device} <-> {n.client_device}"
            )
        return sentences


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line from a child's stdout pipe, or "" after `timeout` seconds."""
    readable, _, _ = select.select([stream.fileno()], [], [], timeout)
    return stream.readline() if readable else ""


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " / ".join(path.read_text().strip().splitlines()[-lines:])
    except OSError:
        return ""
