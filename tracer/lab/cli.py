"""`reqtrace lab ...`: the command-line face of the lab (parsing, printing, exit codes).

Exit codes: 0 success; 2 for a usage mistake, a bad value, a missing privilege or a lab
that cannot be built (always one sentence on stderr, never a traceback); `lab exec` and
`lab load` pass their command's status through; `lab status` exits 1 when no lab exists.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tracer.lab.errors import LabError, require_root

if TYPE_CHECKING:
    from tracer.lab.impairment import Impairment

DEFAULT_PREFIX = "rtlab"
DEFAULT_SUBNET = "10.77.0.0/24"


def add_lab_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lab` and its sub-commands to the top-level parser."""
    lab = commands.add_parser(
        "lab",
        help="test hosts in network namespaces with delay, loss and rate limits (needs root)",
        description="A client host in a network namespace, joined to this host by veth "
        "pairs, so requests cross a real (virtual) device with the impairments you choose.",
    )
    actions = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    def with_prefix(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--prefix", default=DEFAULT_PREFIX, help=f"lab name (default {DEFAULT_PREFIX})"
        )
        return parser

    up = with_prefix(actions.add_parser("up", help="create the lab"))
    up.add_argument(
        "--delay", default="0ms", help="one-way delay, e.g. 5ms, 500us (default %(default)s)"
    )
    up.add_argument(
        "--jitter", default="0ms", help="± uniform jitter, at most the delay (default %(default)s)"
    )
    up.add_argument("--loss", default="0%", help="frame loss, e.g. 1%% (default 0%%)")
    up.add_argument("--rate", help="rate limit, e.g. 10mbit, 512kbit (default: no limit)")
    up.add_argument(
        "--side",
        default="both",
        choices=("server", "client", "both"),
        help="which egress to impair: server (toward the client), client, or both"
        " (default %(default)s)",
    )
    up.add_argument("--subnet", default=DEFAULT_SUBNET, help=f"default {DEFAULT_SUBNET}")
    up.add_argument("--seed", type=int, help="seed for the delay line's loss and jitter")

    with_prefix(actions.add_parser("down", help="remove the lab (safe to repeat)"))
    with_prefix(actions.add_parser("status", help="what exists, mechanisms and counters"))

    run = with_prefix(actions.add_parser("exec", help="run a command on the client host"))
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")

    load = with_prefix(
        actions.add_parser("load", help="HTTP load from the client host (tracer.demo.load)")
    )
    load.add_argument("url", help="e.g. http://10.77.0.1:8000/ (the path is requested)")
    load.add_argument(
        "--rate", type=float, default=50.0, help="requests per second (default %(default)g)"
    )
    load.add_argument(
        "--connections", type=int, default=4, help="client connections (default %(default)s)"
    )
    load.add_argument("--duration", type=float, default=10.0, help="seconds (default %(default)g)")
    load.add_argument(
        "--max-requests", type=int, default=100_000, help="stop after N (default %(default)s)"
    )


def _impairment(args: argparse.Namespace) -> Impairment:
    from tracer.lab.impairment import (
        Impairment,
        parse_duration_ms,
        parse_percent,
        parse_rate_mbit,
    )

    return Impairment(
        delay_ms=parse_duration_ms(args.delay),
        jitter_ms=parse_duration_ms(args.jitter),
        loss_pct=parse_percent(args.loss),
        rate_mbit=parse_rate_mbit(args.rate) if args.rate else None,
        side=args.side,
        seed=args.seed,
    )


def _up(args: argparse.Namespace) -> int:
    from tracer.lab.names import LabNames
    from tracer.lab.topology import Lab

    lab = Lab(prefix=args.prefix, subnet=args.subnet, impairment=_impairment(args))
    names = LabNames(args.prefix)
    require_root()
    info = lab.up()
    prefix_flag = "" if args.prefix == DEFAULT_PREFIX else f" --prefix {args.prefix}"
    bits = args.subnet.split("/")[1]
    url = f"http://{info.server_addr}:8000/"
    lines = [
        f"lab {info.prefix} is up",
        f"  server host: this (root) namespace, {info.server_device} {info.server_addr}/{bits}",
        f"  client host: netns {info.client_netns}, {names.client_device} "
        f"{info.client_addr}/{bits}",
    ]
    if any("delay line" in sentence for sentence in info.mechanisms):
        lines.append(
            f"  router: netns {names.router_netns}, {names.router_server_device} <-> "
            f"{names.router_client_device} (layer 2, no addresses)"
        )
    lines.append("mechanisms:")
    lines += [f"  {sentence}" for sentence in info.mechanisms]
    lines += [
        "next:",
        f"  sudo reqtrace run app:app --host {info.server_addr} --port 8000",
        f"  sudo reqtrace lab exec{prefix_flag} -- curl {url}",
        f"  sudo reqtrace lab load{prefix_flag} {url} --rate 50 --duration 10",
        f"  sudo reqtrace lab status{prefix_flag}",
        f"  sudo reqtrace lab down{prefix_flag}",
    ]
    print("\n".join(lines))
    return 0


def _down(args: argparse.Namespace) -> int:
    from tracer.lab.teardown import lab_down

    require_root()
    removed = lab_down(args.prefix)
    if not removed:
        print(f"no lab {args.prefix} to remove")
        return 0
    print(f"lab {args.prefix} removed: " + ", ".join(removed))
    return 0


def _status(args: argparse.Namespace) -> int:
    from tracer.lab.status import describe_lab

    require_root()
    lines = describe_lab(args.prefix)
    if lines is None:
        print(f"no lab {args.prefix} exists; start one with `sudo reqtrace lab up`")
        return 1
    print("\n".join(lines))
    return 0


def _client_argv(prefix: str, argv: list[str]) -> list[str]:
    from tracer.lab.devices import in_netns, netns_exists
    from tracer.lab.names import LabNames

    names = LabNames(prefix)
    if not netns_exists(names.client_netns):
        raise LabError(f"no lab {prefix} exists; start one with `sudo reqtrace lab up`")
    return in_netns(names.client_netns, argv)


def _run(argv: list[str]) -> int:
    """Run on the client host; a signal death becomes 128+N like a shell reports it."""
    import subprocess

    try:
        code = subprocess.run(argv, check=False).returncode
    except FileNotFoundError as exc:
        raise LabError(f"cannot run {argv[0]}: {exc.strerror}") from None
    return 128 - code if code < 0 else code


def _exec(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise LabError("say what to run: reqtrace lab exec -- CMD [ARGS...]")
    require_root()
    return _run(_client_argv(args.prefix, argv))


def _load(args: argparse.Namespace) -> int:
    from tracer.lab.topology import PROJECT_ROOT

    url = urlsplit(args.url)
    if url.scheme != "http" or not url.hostname:
        raise LabError(
            f"the load generator speaks plain HTTP: give a URL like http://HOST:PORT/PATH, "
            f"not {args.url!r}"
        )
    try:
        port = url.port or 80
    except ValueError:
        raise LabError(f"the port in {args.url!r} is not a number between 0 and 65535") from None
    if args.rate <= 0 or args.connections <= 0 or args.duration <= 0:
        raise LabError("--rate, --connections and --duration must be positive")
    require_root()
    path = url.path or "/"
    if url.query:
        path += f"?{url.query}"
    python_path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
    argv = [
        "env",
        f"PYTHONPATH={python_path}",
        sys.executable,
        "-m",
        "tracer.demo.load",
        "--host",
        url.hostname,
        "--port",
        str(port),
        "--path",
        path,
        "--rate",
        str(args.rate),
        "--connections",
        str(args.connections),
        "--duration",
        str(args.duration),
        "--max-requests",
        str(args.max_requests),
    ]
    return _run(_client_argv(args.prefix, argv))


def run_lab(args: argparse.Namespace) -> int:
    """Dispatch `reqtrace lab ACTION`; every LabError becomes one line and exit status 2."""
    handlers = {"up": _up, "down": _down, "status": _status, "exec": _exec, "load": _load}
    try:
        return handlers[args.lab_command](args)
    except LabError as exc:
        print(f"reqtrace lab: {exc}", file=sys.stderr)
        return 2
