"""The catalog of probe points: what reqtrace observes, and the ways to attach to each.

Each logical probe point has an ordered list of attach strategies, best first:
stable tracepoint -> raw tracepoint -> fentry -> kprobe. The loader (tracer/kernel/attach_plan.py)
tries them in that order and keeps the first that attaches *and* that reqtrace can use
on this machine; `reqtrace doctor` shows every strategy with the reason it was or was not
taken.

A strategy that would need kernel struct fields read through header layouts says so
(`reads_struct_layouts`) and is never used: BCC compiles struct offsets from the installed
headers, which need not match the running kernel (they do not on our own machines), and
BCC's Python front end has no CO-RE relocation to correct them. reqtrace reads kernel data
only from tracepoint fields (BCC takes their layout from tracefs at run time), from
function arguments used as integers or opaque pointers, and from struct pt_regs (the
syscall ABI). Those strategies are listed so `reqtrace doctor` shows, by really trying,
that they attach and why reqtrace still does not use them.

Each tracepoint a strategy reads fields of names those fields in REQUIRED_FIELDS: older
kernels have the tracepoint without some field (kfree_skb without rx_sk, tcp_probe without
sock_cookie), and the trial checks the fields in tracefs before choosing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mechanism = Literal["tracepoint", "raw_tracepoint", "fentry", "kprobe"]
MECHANISMS: tuple[Mechanism, ...] = ("tracepoint", "raw_tracepoint", "fentry", "kprobe")


@dataclass(frozen=True, slots=True)
class Strategy:
    """One way to attach a probe point.

    targets: tracepoints as "category:event", raw tracepoints and kernel functions by name.
    gives_up: what this strategy cannot observe compared with the best one ("" if nothing).
    """

    mechanism: Mechanism
    targets: tuple[str, ...]
    reads_struct_layouts: bool = False
    gives_up: str = ""


@dataclass(frozen=True, slots=True)
class ProbePoint:
    """A logical place on the request's path that reqtrace observes."""

    name: str
    title: str
    layer: str
    feeds: tuple[str, ...]  # stages (or connection facts) this point contributes to
    strategies: tuple[Strategy, ...]
    required: bool = True  # without it reqtrace cannot build its core timeline

    def strategy(self, mechanism: Mechanism) -> Strategy | None:
        return next((s for s in self.strategies if s.mechanism == mechanism), None)


def _syscalls(*names: str) -> tuple[str, ...]:
    return tuple(f"syscalls:sys_{edge}_{name}" for name in names for edge in ("enter", "exit"))


CATALOG: tuple[ProbePoint, ...] = (
    ProbePoint(
        name="nic_irq",
        title="NIC hardware interrupt",
        layer="kernel",
        feeds=("nic_irq",),
        required=False,
        strategies=(
            Strategy("tracepoint", ("irq:irq_handler_entry", "irq:irq_handler_exit")),
            Strategy("raw_tracepoint", ("irq_handler_entry", "irq_handler_exit")),
            Strategy(
                "fentry",
                ("handle_irq_event",),
                reads_struct_layouts=True,
                gives_up="irq number is read from struct irq_desc",
            ),
            Strategy(
                "kprobe",
                ("handle_irq_event",),
                reads_struct_layouts=True,
                gives_up="irq number is read from struct irq_desc",
            ),
        ),
    ),
    ProbePoint(
        name="net_rx_softirq",
        title="NET_RX softirq (raise, entry, exit)",
        layer="kernel",
        feeds=("nic_irq", "backlog", "softirq"),
        strategies=(
            Strategy("tracepoint", ("irq:softirq_raise", "irq:softirq_entry", "irq:softirq_exit")),
            Strategy("raw_tracepoint", ("softirq_raise", "softirq_entry", "softirq_exit")),
            Strategy("fentry", ("net_rx_action",), gives_up="raise time (hardirq -> softirq link)"),
            Strategy("kprobe", ("net_rx_action",), gives_up="raise time (hardirq -> softirq link)"),
        ),
    ),
    ProbePoint(
        name="napi_poll",
        title="NAPI poll (backlog on lo/veth, driver queue on a NIC)",
        layer="kernel",
        feeds=("softirq",),
        strategies=(
            Strategy("tracepoint", ("napi:napi_poll",)),
            Strategy("raw_tracepoint", ("napi_poll",), gives_up="device name of the poll"),
            Strategy("fentry", ("__napi_poll",), gives_up="device name of the poll"),
            Strategy("kprobe", ("__napi_poll",), gives_up="device name of the poll"),
        ),
    ),
    ProbePoint(
        name="netif_receive",
        title="netif_rx / netif_receive_skb (packet handed to the stack)",
        layer="kernel",
        feeds=("backlog", "softirq", "ip_tcp"),
        strategies=(
            Strategy("tracepoint", ("net:netif_receive_skb", "net:netif_rx")),
            Strategy(
                "raw_tracepoint",
                ("netif_receive_skb", "netif_rx"),
                gives_up="receiving device name",
            ),
            # __netif_receive_skb sees packets one by one (the backlog of lo and veth,
            # drivers without GRO); the GRO lists a NIC driver hands over go through
            # __netif_receive_skb_list_core, where no per-packet function is traceable.
            Strategy(
                "fentry",
                ("__netif_receive_skb",),
                gives_up="receiving device name, backlog queueing time (netif_rx), and packets"
                " a NIC driver delivers in GRO lists",
            ),
            Strategy(
                "kprobe",
                ("__netif_receive_skb",),
                gives_up="receiving device name, backlog queueing time (netif_rx), and packets"
                " a NIC driver delivers in GRO lists",
            ),
        ),
    ),
    ProbePoint(
        name="tcp_receive",
        title="TCP segment received on an established socket",
        layer="kernel",
        feeds=("ip_tcp",),
        strategies=(
            Strategy("tracepoint", ("tcp:tcp_probe",)),
            Strategy(
                "raw_tracepoint",
                ("tcp_probe",),
                reads_struct_layouts=True,
                gives_up="ports, length and srtt are read from struct sock / sk_buff",
            ),
            Strategy(
                "fentry",
                ("tcp_rcv_established",),
                reads_struct_layouts=True,
                gives_up="ports, length and srtt are read from struct sock / sk_buff",
            ),
            Strategy(
                "kprobe",
                ("tcp_rcv_established",),
                reads_struct_layouts=True,
                gives_up="ports, length and srtt are read from struct sock / sk_buff",
            ),
        ),
    ),
    ProbePoint(
        name="socket_data_ready",
        title="socket data ready (sk_data_ready)",
        layer="kernel",
        feeds=("ip_tcp", "loop_busy", "wakeup"),
        strategies=(
            Strategy("tracepoint", ("sock:sk_data_ready",)),
            Strategy("raw_tracepoint", ("sk_data_ready",)),
            Strategy("fentry", ("sock_def_readable",)),
            Strategy("kprobe", ("sock_def_readable",)),
        ),
    ),
    ProbePoint(
        name="thread_wakeup",
        title="scheduler wakeup of the server thread",
        layer="kernel",
        feeds=("wakeup",),
        required=False,
        strategies=(
            Strategy("tracepoint", ("sched:sched_wakeup",)),
            Strategy(
                "raw_tracepoint",
                ("sched_wakeup",),
                reads_struct_layouts=True,
                gives_up="woken pid is read from struct task_struct",
            ),
            Strategy(
                "fentry",
                ("try_to_wake_up",),
                reads_struct_layouts=True,
                gives_up="woken pid is read from struct task_struct",
            ),
            Strategy(
                "kprobe",
                ("try_to_wake_up",),
                reads_struct_layouts=True,
                gives_up="woken pid is read from struct task_struct",
            ),
        ),
    ),
    ProbePoint(
        name="epoll_wait",
        title="epoll_wait / epoll_pwait / epoll_pwait2 of the server",
        layer="event_loop",
        feeds=("loop_busy", "wakeup", "event_loop"),
        strategies=(
            Strategy("tracepoint", _syscalls("epoll_wait", "epoll_pwait", "epoll_pwait2")),
            Strategy("raw_tracepoint", ("sys_enter", "sys_exit")),
            Strategy("fentry", ("do_epoll_wait",)),
            Strategy("kprobe", ("do_epoll_wait",)),
        ),
    ),
    ProbePoint(
        name="socket_recv",
        title="recvfrom / recvmsg / read on a server socket",
        layer="syscall",
        feeds=("event_loop", "recv", "server"),
        strategies=(
            Strategy(
                "tracepoint",
                (*_syscalls("recvfrom", "recvmsg", "read"), "sock:sock_recv_length"),
            ),
            Strategy("raw_tracepoint", ("sys_enter", "sys_exit", "sock_recv_length")),
            Strategy("fentry", ("__sys_recvfrom", "__sys_recvmsg", "ksys_read", "tcp_recvmsg")),
            Strategy("kprobe", ("__sys_recvfrom", "__sys_recvmsg", "ksys_read", "tcp_recvmsg")),
        ),
    ),
    ProbePoint(
        name="socket_send",
        title="sendto / sendmsg / write / writev on a server socket",
        layer="syscall",
        feeds=("server", "send"),
        strategies=(
            Strategy(
                "tracepoint",
                (*_syscalls("sendto", "sendmsg", "write", "writev"), "sock:sock_send_length"),
            ),
            Strategy("raw_tracepoint", ("sys_enter", "sys_exit", "sock_send_length")),
            Strategy(
                "fentry",
                ("__sys_sendto", "__sys_sendmsg", "ksys_write", "do_writev", "tcp_sendmsg"),
            ),
            Strategy(
                "kprobe",
                ("__sys_sendto", "__sys_sendmsg", "ksys_write", "do_writev", "tcp_sendmsg"),
            ),
        ),
    ),
    ProbePoint(
        name="device_xmit",
        title="device transmit (net_dev_xmit)",
        layer="kernel",
        feeds=("send",),
        required=False,
        strategies=(
            Strategy("tracepoint", ("net:net_dev_xmit",)),
            Strategy("raw_tracepoint", ("net_dev_xmit",), gives_up="device name"),
            Strategy("fentry", ("dev_hard_start_xmit",), gives_up="device name and length"),
            Strategy("kprobe", ("dev_hard_start_xmit",), gives_up="device name and length"),
        ),
    ),
    ProbePoint(
        name="accept",
        title="accept4 / accept of the server",
        layer="syscall",
        feeds=("accept_queue",),
        required=False,
        strategies=(
            Strategy("tracepoint", _syscalls("accept4", "accept")),
            Strategy("raw_tracepoint", ("sys_enter", "sys_exit")),
            Strategy("fentry", ("__sys_accept4",)),
            Strategy("kprobe", ("__sys_accept4",)),
        ),
    ),
    ProbePoint(
        name="tcp_state",
        title="TCP state changes (handshake, close)",
        layer="kernel",
        feeds=("handshake", "accept_queue"),
        required=False,
        strategies=(
            Strategy("tracepoint", ("sock:inet_sock_set_state",)),
            Strategy(
                "raw_tracepoint",
                ("inet_sock_set_state",),
                reads_struct_layouts=True,
                gives_up="ports are read from struct sock",
            ),
            Strategy(
                "fentry",
                ("tcp_set_state",),
                reads_struct_layouts=True,
                gives_up="old state and ports are read from struct sock",
            ),
            Strategy(
                "kprobe",
                ("tcp_set_state",),
                reads_struct_layouts=True,
                gives_up="old state and ports are read from struct sock",
            ),
        ),
    ),
    ProbePoint(
        name="tcp_retransmit",
        title="TCP retransmits",
        layer="kernel",
        feeds=("send",),
        required=False,
        strategies=(
            Strategy("tracepoint", ("tcp:tcp_retransmit_skb",)),
            Strategy("raw_tracepoint", ("tcp_retransmit_skb",)),
            Strategy("fentry", ("tcp_retransmit_skb",)),
            Strategy("kprobe", ("tcp_retransmit_skb",)),
        ),
    ),
    ProbePoint(
        name="tcp_reset",
        title="TCP resets sent and received",
        layer="kernel",
        feeds=(),
        required=False,
        strategies=(
            Strategy("tracepoint", ("tcp:tcp_send_reset", "tcp:tcp_receive_reset")),
            Strategy("raw_tracepoint", ("tcp_send_reset", "tcp_receive_reset")),
            Strategy("fentry", ("tcp_reset",), gives_up="resets sent"),
            Strategy("kprobe", ("tcp_reset",), gives_up="resets sent"),
        ),
    ),
    ProbePoint(
        name="rx_drop",
        title="receive drops (socket buffer full, protocol memory)",
        layer="kernel",
        feeds=("ip_tcp",),
        required=False,
        strategies=(
            Strategy("tracepoint", ("skb:kfree_skb", "sock:sock_rcvqueue_full")),
            Strategy("raw_tracepoint", ("kfree_skb", "sock_rcvqueue_full")),
            Strategy("fentry", ("sk_skb_reason_drop",)),
            Strategy("kprobe", ("sk_skb_reason_drop",)),
        ),
    ),
    ProbePoint(
        name="socket_close",
        title="close of a server socket, socket destruction",
        layer="syscall",
        feeds=(),
        required=False,
        strategies=(
            Strategy("tracepoint", (*_syscalls("close"), "tcp:tcp_destroy_sock")),
            Strategy("raw_tracepoint", ("sys_enter", "sys_exit", "tcp_destroy_sock")),
            # tcp_v4_destroy_sock (IPv6 too) is where tcp:tcp_destroy_sock fires; tcp_close
            # would forget the socket at close(), before its final state change.
            Strategy("fentry", ("tcp_v4_destroy_sock",), gives_up="fd of the socket being closed"),
            Strategy("kprobe", ("tcp_v4_destroy_sock",), gives_up="fd of the socket being closed"),
        ),
    ),
)

POINTS_BY_NAME: dict[str, ProbePoint] = {p.name: p for p in CATALOG}

# Tracepoint fields the adapters use when the running kernel has them and do without
# otherwise (older kernels lack them). The loader defines RT_HAS_<EVENT>_<FIELD> for each
# one present (tracer/kernel/bpf_program.py), so the adapter compiles either way.
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "tcp:tcp_retransmit_skb": ("err",),
}

# Tracepoint fields the tracepoint adapters (probes/adapters_tracepoint.h) read.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "irq:irq_handler_entry": ("irq",),
    "irq:softirq_raise": ("vec",),
    "irq:softirq_entry": ("vec",),
    "irq:softirq_exit": ("vec",),
    "net:netif_rx": ("skbaddr",),
    "net:netif_receive_skb": ("skbaddr", "name"),
    "tcp:tcp_probe": (
        "skaddr",
        "skbaddr",
        "sport",
        "dport",
        "saddr",
        "daddr",
        "data_len",
        "srtt",
        "rcv_wnd",
        "snd_wnd",
        "sock_cookie",
    ),
    "sock:sk_data_ready": ("skaddr",),
    "sched:sched_wakeup": ("pid",),
    "sock:sock_recv_length": ("sk", "ret"),
    "sock:sock_send_length": ("sk", "ret"),
    "net:net_dev_xmit": ("len", "rc", "name"),
    "sock:inet_sock_set_state": (
        "skaddr",
        "oldstate",
        "newstate",
        "sport",
        "dport",
        "family",
        "protocol",
        "saddr",
        "daddr",
        "saddr_v6",
        "daddr_v6",
    ),
    "tcp:tcp_retransmit_skb": ("skaddr", "state", "sport", "dport", "family"),
    "tcp:tcp_send_reset": ("skaddr", "state", "reason"),
    "tcp:tcp_receive_reset": ("skaddr",),
    "skb:kfree_skb": ("rx_sk", "reason", "location"),
    "sock:sock_rcvqueue_full": ("rmem_alloc", "sk_rcvbuf"),
    "tcp:tcp_destroy_sock": ("skaddr",),
}

# Driver name (ethtool -i) -> its NAPI poll function. The NIC-driver probe point attaches
# fentry/kprobe here where the kernel allows; otherwise napi:napi_poll covers it.
DRIVER_POLL_FUNCTIONS: dict[str, str] = {
    "virtio_net": "virtnet_poll",
    "mlx5_core": "mlx5e_napi_poll",
    "mlx4_en": "mlx4_en_poll_rx_cq",
    "ixgbe": "ixgbe_poll",
    "ixgbevf": "ixgbevf_poll",
    "i40e": "i40e_napi_poll",
    "iavf": "iavf_napi_poll",
    "ice": "ice_napi_poll",
    "igb": "igb_poll",
    "igc": "igc_poll",
    "e1000e": "e1000e_poll",
    "e1000": "e1000_clean",
    "ena": "ena_io_poll",
    "gve": "gve_napi_poll",
    "bnxt_en": "bnxt_poll",
    "tg3": "tg3_poll_msix",
    "r8169": "rtl8169_poll",
    "vmxnet3": "vmxnet3_poll_rx_only",
    "hv_netvsc": "netvsc_poll",
    "veth": "veth_poll",
    "xen-netfront": "xennet_poll",
    "nfp": "nfp_net_poll",
    "sfc": "efx_poll",
    "qede": "qede_poll",
    "cxgb4": "napi_rx_handler",
}


DRIVER_POINT_PREFIX = "nic_driver_poll:"  # + the interface: the point's name


def driver_poll_point(interface: str, driver: str) -> ProbePoint:
    """The NIC-driver poll point for one interface.

    Only fentry/kprobe can see the driver's own poll function; when neither attaches the
    point is still covered by napi:napi_poll (the plan says so).
    """
    function = DRIVER_POLL_FUNCTIONS.get(driver, "")
    strategies: tuple[Strategy, ...] = ()
    if function:
        strategies = (
            Strategy("fentry", (function,)),
            Strategy("kprobe", (function,)),
        )
    return ProbePoint(
        name=f"{DRIVER_POINT_PREFIX}{interface}",
        title=f"{driver or 'unknown driver'} poll function on {interface}"
        + (f" ({function})" if function else ""),
        layer="kernel",
        feeds=("softirq",),
        strategies=strategies,
        required=False,
    )
