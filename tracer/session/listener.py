"""The listening socket of `reqtrace run`, made by the tracer and inherited by the server.

Opening it in the parent has three uses: the port is known (even with --port 0) before the
probes are filtered; privileged ports work although the app runs as an ordinary user; and
the tracer can read the socket's buffer sizes for the dashboard at any time.

It is bound early (a port in use is reported before the probes compile) but listens only
once the probes are attached and filtered (`start_listening`): until then clients are
refused, so no connection's handshake happens before tracing and every connection is
traced from its first packet.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat

from tracer.server.config import Config


class ListenError(RuntimeError):
    """The address cannot be listened on; the message is one sentence."""


def open_listener(config: Config) -> socket.socket:
    """A bound socket for the config's address, not yet listening."""
    try:
        if config.uds:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(config.uds).st_mode):
                    os.unlink(config.uds)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(config.uds)
            os.chmod(config.uds, 0o666)
        else:
            family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((config.host, config.port))
    except OSError as exc:
        where = config.uds or f"{config.host}:{config.port}"
        raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def start_listening(sock: socket.socket, config: Config) -> None:
    try:
        sock.listen(config.backlog)
    except OSError as exc:
        where = config.uds or f"{config.host}:{listener_port(sock)}"
        raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from None


def listener_port(sock: socket.socket) -> int:
    if sock.family == socket.AF_UNIX:
        return 0
    return int(sock.getsockname()[1])


def listener_url(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def buffer_sizes(sock: socket.socket) -> tuple[int | None, int | None]:
    """SO_RCVBUF and SO_SNDBUF of the listening socket (new connections start from these)."""
    try:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        )
    except OSError:
        return None, None
