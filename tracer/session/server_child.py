"""The server child of `reqtrace run`: wait for the tracer, drop privileges, serve the app.

    python -m tracer.session.server_child --config JSON --control-fd N --run-as NAME:UID:GID

The parent (tracer/session/run_session.py) has already bound and listened on the socket (the
config's `fd`), opened the hook pipe (the config's `hook_fd`) and loaded the probes. This
process blocks until the parent writes one byte on the control pipe, which it does after
writing this process's pid into the probe filters: the first request is traced like every
other. Then it becomes the target account and only then imports the app. If the parent dies
first (EOF on the control pipe), it exits without serving; if the parent dies later, even by
SIGKILL, the kernel sends this process SIGTERM (PR_SET_PDEATHSIG) and it shuts down.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys

from tracer.session.privileges import Account, PrivilegeError, drop_to

EXIT_PARENT_GONE = 3
EXIT_PRIVILEGES = 4


def wait_for_go(control_fd: int) -> bool:
    try:
        return os.read(control_fd, 1) == b"G"
    finally:
        os.close(control_fd)


PR_SET_PDEATHSIG = 1


def end_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGTERM this process when the tracer dies (even by SIGKILL).

    Set after the privilege drop, which clears it. False if the parent is already gone.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == parent_pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracer.session.server_child")
    parser.add_argument("--config", required=True, help="server Config as JSON")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--run-as", default="", help="NAME:UID:GID to become before serving")
    args = parser.parse_args(argv)
    parent_pid = os.getppid()

    if not wait_for_go(args.control_fd):
        print("reqtrace: the tracer went away before the server started", file=sys.stderr)
        return EXIT_PARENT_GONE
    if args.run_as:
        try:
            drop_to(Account.from_spec(args.run_as))
        except PrivilegeError as exc:
            print(f"reqtrace: {exc}", file=sys.stderr)
            return EXIT_PRIVILEGES
    if not end_with_parent(parent_pid):
        print("reqtrace: the tracer went away before the server started", file=sys.stderr)
        return EXIT_PARENT_GONE

    # Only now, as the target account, import the server (and through it the app).
    from tracer.server.config import Config
    from tracer.server.main import serve

    config = Config(**json.loads(args.config))
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
