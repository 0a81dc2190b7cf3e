"""Which connection a record belongs to: the correlator's table of live connections and
the indexes that find one from any kind of record.

    kernel socket   (sk, client address, client port)  recv, send, state, retransmit, ...
    client end      (client address, client port, server port)  joins a hook's peer
    hook side       (pid, conn_id)                      ConnectionOpened, RequestTiming, ...
    descriptor      (pid, fd)                           accept; a hook without its open

A reused sk address, 4-tuple or fd number never merges two connections: a new ESTABLISHED
starts a new generation for its socket, an accept makes its fd number name the next
connection, and a hook side joins only a kernel side that no other hook side has.
Addresses are compared as the kernel reports them (IPv4-mapped IPv6 as plain IPv4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from tracer.correlate.connection import Connection
from tracer.records.hooks import ConnectionOpened, RequestTiming
from tracer.records.kernel import AcceptRecord, SocketId, StateRecord

TCP_ESTABLISHED = 1
TCP_FIN_WAIT1 = 4
TCP_CLOSE = 7
TCP_CLOSE_WAIT = 8

SockKey = tuple[int, str, int]
PeerKey = tuple[str, int, int]
K = TypeVar("K")


def normalize_ip(ip: str) -> str:
    """'::ffff:127.0.0.1' -> '127.0.0.1': the kernel side reports mapped addresses as v4."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


def sock_key(sock: SocketId) -> SockKey:
    return (sock.sk, sock.raddr, sock.rport)


class ConnectionTable:
    """Live connections and their indexes (see the module docstring)."""

    def __init__(
        self,
        max_connections: int,
        max_unjoined_accepts: int,
        evict: Callable[[list[Connection]], None],
    ) -> None:
        self.max_connections = max_connections
        self.max_unjoined_accepts = max_unjoined_accepts
        self._evict = evict  # retires connections the table must make room for
        self._connections: dict[int, Connection] = {}
        self._by_sock: dict[SockKey, Connection] = {}
        self._by_peer: dict[PeerKey, Connection] = {}
        self._by_hook: dict[tuple[int, int], Connection] = {}
        # Read-only views of two indexes for the correlator's hot path (a dict lookup instead
        # of a call to for_socket / for_hook when the connection is known): never modified
        # there, only through this table's methods.
        self.by_sock: Mapping[SockKey, Connection] = self._by_sock
        self.by_hook: Mapping[tuple[int, int], Connection] = self._by_hook
        self._by_fd: dict[tuple[int, int], Connection] = {}
        self._accepts: dict[tuple[int, int], AcceptRecord] = {}  # not yet joined
        self._next_serial = 1

    def __len__(self) -> int:
        return len(self._connections)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._connections.values()))

    def __contains__(self, connection: Connection) -> bool:
        return self._connections.get(connection.serial) is connection

    @property
    def unjoined_accepts(self) -> int:
        return len(self._accepts)

    def create(self, now_ns: int) -> Connection:
        """A new connection; at the limit, the least recently active sixteenth goes first."""
        if len(self._connections) >= self.max_connections:
            ordered = sorted(
                self._connections.values(), key=lambda c: (c.last_activity_ns, c.serial)
            )
            self._evict(ordered[: max(1, len(ordered) // 16)])
        connection = Connection(self._next_serial, now_ns)
        self._next_serial += 1
        self._connections[connection.serial] = connection
        return connection

    def remove(self, connection: Connection) -> None:
        """Forget a connection and every index entry that still points to it."""
        self._connections.pop(connection.serial, None)
        _unindex(self._by_hook, (connection.pid, connection.conn_id), connection)
        _unindex(self._by_fd, (connection.pid, connection.fd), connection)
        if connection.sock is not None:
            _unindex(self._by_sock, sock_key(connection.sock), connection)
        if connection.peer_key is not None:
            _unindex(self._by_peer, connection.peer_key, connection)

    def idle_since(self, cutoff_ns: int) -> list[Connection]:
        """Open connections with no activity after `cutoff_ns` and nothing waiting."""
        return [
            c
            for c in self._connections.values()
            if c.last_activity_ns < cutoff_ns and not c.pending and not c.close_deadline_ns
        ]

    # ---- kernel side ----------------------------------------------------------------------

    def for_socket(
        self, sock: SocketId, now_ns: int, *, new_generation: bool = False
    ) -> Connection:
        """The connection of a kernel socket; created (and joined to a hook side) if new.

        `new_generation`: the socket was just established, so a connection already known
        under the same key belongs to an earlier socket at that address.
        """
        key = (sock.sk, sock.raddr, sock.rport)
        connection = self._by_sock.get(key)
        if connection is not None and not (
            new_generation and (connection.kernel_closed or connection.established_ns)
        ):
            return connection
        peer = (sock.raddr, sock.rport, sock.lport)
        waiting = self._by_peer.get(peer)
        if waiting is not None and waiting.sock is None and not waiting.hook_closed:
            connection = waiting  # the hook side opened it first: join
        else:
            connection = self.create(now_ns)
            connection.client = (sock.raddr, sock.rport)
            connection.server = (sock.laddr, sock.lport)
            connection.peer_key = peer
            self._by_peer[peer] = connection
        connection.sock = sock
        self._by_sock[key] = connection
        return connection

    def known_socket(self, sock: SocketId) -> Connection | None:
        return self._by_sock.get((sock.sk, sock.raddr, sock.rport))

    def change_state(self, record: StateRecord) -> Connection | None:
        """A TCP state change: ESTABLISHED starts a connection (a new generation of its
        socket); leaving ESTABLISHED says who began the close. Returns the connection the
        change is about (None: a socket not known here), with `kernel_closed` set once the
        socket reached TCP_CLOSE (no write can follow)."""
        if record.newstate == TCP_ESTABLISHED:
            connection = self.for_socket(record.sock, record.ts_ns, new_generation=True)
            connection.established_ns = record.ts_ns
            connection.syn_recv_ns = record.syn_recv_ts
            connection.last_activity_ns = record.ts_ns
            if connection.pid:
                self.join_accept(connection)
            return connection
        known = self._by_sock.get((record.sock.sk, record.sock.raddr, record.sock.rport))
        if known is None:
            return None
        if record.oldstate == TCP_ESTABLISHED and not known.closed_by:
            if record.newstate == TCP_CLOSE_WAIT:
                known.closed_by = "client"
            elif record.newstate == TCP_FIN_WAIT1:
                known.closed_by = "server"
        if record.newstate == TCP_CLOSE:
            known.kernel_closed = True
        return known

    def bind_fd(self, connection: Connection, pid: int, fd: int) -> None:
        """The connection is (now) this fd of this process."""
        _unindex(self._by_fd, (connection.pid, connection.fd), connection)
        connection.pid, connection.fd = pid, fd
        self._by_fd[(pid, fd)] = connection
        self.join_accept(connection)

    def add_accept(self, record: AcceptRecord) -> int:
        """Remember an accept until its connection shows up; returns accepts dropped."""
        key = (record.pid, record.fd)
        accepts = self._accepts
        accepts.pop(key, None)
        accepts[key] = record
        # The fd number now names a new connection: forget which one it named before.
        self._by_fd.pop(key, None)
        if len(accepts) > self.max_unjoined_accepts:
            del accepts[next(iter(accepts))]
            return 1
        return 0

    def join_accept(self, connection: Connection) -> None:
        """accept_queue: the accept that returned this connection's fd, if still unjoined."""
        key = (connection.pid, connection.fd)
        accept = self._accepts.get(key)
        if accept is None or connection.accepted_ns:
            return
        if connection.established_ns and accept.ts_ns < connection.established_ns:
            return  # an accept of an earlier connection on the same fd number
        connection.accepted_ns = accept.ts_ns
        del self._accepts[key]

    # ---- hook side ------------------------------------------------------------------------

    def for_hook(self, pid: int, conn_id: int) -> Connection | None:
        return self._by_hook.get((pid, conn_id))

    def open_from_hook(self, record: ConnectionOpened) -> Connection:
        """connection_made: join the kernel side with the same client end, or wait for it."""
        client_ip = normalize_ip(record.peer[0])
        connection = None
        if client_ip:
            peer = (client_ip, record.peer[1], record.local[1])
            waiting = self._by_peer.get(peer)
            if waiting is not None and waiting.conn_id == 0 and not waiting.kernel_closed:
                connection = waiting  # the kernel saw it first (ESTABLISHED): join
            else:
                connection = self.create(record.ts_ns)
                connection.peer_key = peer
                self._by_peer[peer] = connection
        else:
            connection = self.create(record.ts_ns)
            connection.unix = True
        connection.conn_id = record.conn_id
        connection.tid = record.tid
        connection.client = (client_ip, record.peer[1])
        connection.server = (normalize_ip(record.local[0]), record.local[1])
        connection.next_seq = connection.next_seq or 1
        connection.last_activity_ns = record.ts_ns
        self._by_hook[(record.pid, record.conn_id)] = connection
        self.bind_fd(connection, record.pid, record.fd)
        return connection

    def adopt_for_hook(self, timing: RequestTiming, ts_ns: int) -> Connection:
        """A request on a connection no ConnectionOpened announced: find it by (pid, fd)."""
        connection = self._by_fd.get((timing.pid, timing.fd))
        if connection is None or connection.conn_id:
            connection = self.create(ts_ns)
            self.bind_fd(connection, timing.pid, timing.fd)
        connection.conn_id = timing.conn_id
        connection.tid = timing.tid
        self._by_hook[(timing.pid, timing.conn_id)] = connection
        return connection


def _unindex(index: dict[K, Connection], key: K, connection: Connection) -> None:
    if index.get(key) is connection:
        del index[key]
