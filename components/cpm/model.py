"""The manager's data: pooled connections, callers, pools, and the socket helpers they share."""

from __future__ import annotations

import _socket
import contextlib
import json
import os
import random
import select
import socket
import struct
import time
from collections import OrderedDict, deque
from types import ModuleType
from typing import Any

from components.pool_config import PoolConfig
from components.protocol import split_hostport

AF_UNIX = socket.AF_UNIX
SOCK_STREAM = socket.SOCK_STREAM
EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
PEERCRED = struct.Struct("3i")
FD_SIZE = 4
ANC_SPACE = socket.CMSG_SPACE(8 * FD_SIZE)
RECV_FLAGS = socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT
SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
PEEK_FLAGS = socket.MSG_PEEK | socket.MSG_DONTWAIT
TCP_ESTABLISHED = 1
HEALTH_EVENTS = select.POLLIN | select.POLLPRI | select.POLLRDHUP | select.POLLERR | select.POLLHUP
TICK = 0.05  # timer resolution for request/borrow/connect deadlines
LAT_BOUNDS_US = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 1_000_000)
HANDED_MEMORY = 65536  # handed-out connections remembered so a release can be verified
MAX_PENDING_FDS = 8  # fds a caller may attach to a request line still arriving
HANDOUT_PROBES = 4  # dead idle connections one acquire discards before leaving the rest to the sweep
DISCARD_LOG_WINDOW = 1.0  # seconds: the first discard of a window is logged alone, the rest in one summary
# The kernel's socket cookie (Linux >= 4.12): unique per socket for the system's lifetime, read the same
# through every descriptor of the socket, and not settable by anyone.
SO_COOKIE = getattr(socket, "SO_COOKIE", 57)
_COOKIE = struct.Struct("Q")


def socket_cookie(sock: Any) -> int | None:
    """The socket's SO_COOKIE, or None where the kernel does not offer it."""
    try:
        value: int = _COOKIE.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, _COOKIE.size))[0]
    except (OSError, struct.error):
        return None
    return value


def cookies_supported() -> bool:
    a, b = socket.socketpair()
    try:
        ca, cb = socket_cookie(a), socket_cookie(b)
        return ca is not None and cb is not None and ca != cb
    finally:
        a.close()
        b.close()


class Conn:
    """One pooled backend connection."""

    __slots__ = (
        "anc",
        "created",
        "diag",
        "eligible_at",
        "expires",
        "fd",
        "idle_since",
        "key",
        "meta",
        "peer",
        "reply_tail",
        "session",
        "sock",
        "traffic",
    )

    def __init__(self, sock: _socket.socket, peer: str, key: Any, meta: bytes, now: float, expires: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.key = key  # release identity: the socket cookie (or the address pair where there is none)
        self.meta = meta
        self.session: dict[str, Any] = {}  # a plug-in session's meta as open_session returned it
        self.eligible_at = now  # a fresh connection settles until then before its first health check
        self.created = now
        self.expires = expires
        self.idle_since = now
        # Prepared off the hot path (in the refill thread for TCP): the SCM_RIGHTS payload and
        # the reply after the hand-out id.
        self.anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", self.fd))]
        self.reply_tail = b',"meta":' + meta + b"}\n"
        # (bytes acked, bytes received) when pooled: a release compares against it (release_check).
        self.traffic = (-1, -1)
        self.diag: Any = None  # how the kernel finds it once handed out (backend_cap), when capped


class Client:
    """A caller connected to the Unix socket (one request per connection)."""

    __slots__ = (
        "allowed",
        "buf",
        "deadline",
        "fd",
        "fds",
        "gid",
        "half_closed",
        "handoff",
        "out",
        "pending",
        "pid",
        "pool",
        "registered",
        "sock",
        "t0",
        "uid",
    )

    def __init__(self, sock: _socket.socket, now: float, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""
        self.fds: list[int] = []  # fds attached to the part of the request line read so far
        self.pending = False  # counted among its uid's callers still sending their line
        self.out = b""  # the rest of a reply too large for one send, sent as the socket drains
        self.t0 = now
        self.deadline = deadline
        self.registered = False
        self.allowed = False
        self.pool: Pool | None = None  # set while waiting for a connection
        self.handoff: Any = None  # the hand-off strategy the request asked for; None: the pool's
        self.half_closed = False  # the caller shut down its sending side while waiting for its reply
        try:
            self.pid, self.uid, self.gid = PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
            )
        except OSError:
            self.pid, self.uid, self.gid = 0, -1, -1


class Pool:
    def __init__(self, cfg: PoolConfig, plugin: ModuleType | None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.jname = json.dumps(cfg.name)
        self.plugin = plugin
        self.idle: deque[Conn] = deque()
        self.waiters: deque[Client] = deque()
        self.settling: deque[Conn] = deque()  # fresh connections waiting out the settle period
        self.handoff: Any = None  # how a connection reaches its caller (components.cpm.handoff)
        self.discard_log_until = 0.0
        self.discards_unlogged: dict[str, int] = {}
        self.connecting = 0
        self.checking = 0  # plug-in sessions being checked before hand-out
        self.refreshing = 0  # idle plug-in sessions being proven alive in the background
        self.addrs: list[tuple[int, tuple[Any, ...]]] = []
        self.addrs_expire = 0.0
        self.resolving = False
        self.resolved_at = -float("inf")  # when the addresses were last resolved (kept through outages)
        self.addr_index = 0  # the address connects go to: the first, until it fails
        self.addrs_failed = 0  # addresses that failed in a row since the last connection
        self.connect_addr: dict[int, int] = {}  # fd of a connect in flight -> its address index
        self.address = ""  # the backend address the last connection reached (stats, log)
        self.out: dict[int, Any] = {}  # handed-out connections maybe still open (with max_backend)
        self.out_checked = 0.0
        self.out_unverifiable = False
        self.tcp_index = -1
        self.level = 0  # backoff level: consecutive failed connect rounds
        self.next_attempt = 0.0
        self.last_error = ""
        self.last_acquire = time.monotonic()  # start full; shrink to min_idle only after max_idle unused
        # Handed-out connections that may come back: key -> (created, traffic at hand-out).
        self.handed: OrderedDict[Any, tuple[float, tuple[int, int]]] = OrderedDict()
        # What a fresh socket of this pool looks like, per address family (release_check.baseline).
        self.release_baseline: dict[int, dict[str, Any]] = {}
        self.peer_names: dict[tuple[Any, ...], str] = {}
        self.reply_head = ('{"ok":true,"pool":' + json.dumps(cfg.name) + ',"peer":"').encode()
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "handed_out",
                "refills",
                "connect_failures",
                "discard_health",
                "discard_ttl",
                "discard_idle",
                "discard_release",
                "discard_fresh",
                "released_reused",
                "fallbacks_seen",
                "fd_dropped",
                "borrow_waits",
                "borrow_timeouts",
                "exhausted",
                "unavailable",
                "send_failures",
                "relayed",
                "relay_refused",
                "release_reset",
                "address_failures",
            ),
            0,
        )
        self._literal: tuple[int, tuple[Any, ...]] | None = None
        if cfg.kind == "tcp":
            host, port = split_hostport(cfg.target)
            for family in (socket.AF_INET, socket.AF_INET6):
                try:
                    socket.inet_pton(family, host)
                except OSError:
                    continue
                self._literal = (family, (host, port))
                self.addrs = [self._literal]
                self.addrs_expire = float("inf")
                self.resolved_at = float("inf")
                break

    @property
    def down(self) -> bool:
        return self.level > 0

    def target_size(self, now: float) -> int:
        cfg = self.cfg
        if cfg.max_idle > 0 and now - self.last_acquire > cfg.max_idle:
            return cfg.min_idle
        return cfg.size

    def expiry(self, now: float) -> float:
        ttl = self.cfg.ttl
        if ttl <= 0:
            return float("inf")
        return now + ttl * (1.0 - self.cfg.ttl_jitter * random.random())


def unhealthy_reason(sock: _socket.socket) -> str:
    try:
        return "eof" if sock.recv(1, PEEK_FLAGS) == b"" else "unread_data"
    except (BlockingIOError, InterruptedError):
        return "hangup"
    except OSError as exc:
        return f"error: {exc.strerror or exc}"


def fds_of(anc: list[tuple[int, int, bytes]]) -> list[int]:
    out: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            n = len(data) // FD_SIZE
            out.extend(struct.unpack(f"{n}i", data[: n * FD_SIZE]))
    return out


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def resolve(target: str) -> list[tuple[int, tuple[Any, ...]]]:
    host, port = split_hostport(target)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Prefer IPv4: the docker bridge network the manager runs on is IPv4.
    infos.sort(key=lambda i: 0 if i[0] == socket.AF_INET else 1)
    return [(int(i[0]), i[4]) for i in infos]


def run_open(plugin: ModuleType, config: dict[str, Any]) -> tuple[socket.socket, dict[str, Any]]:
    sock, meta = plugin.open_session(config)
    return sock, dict(meta)


def run_check(plugin: ModuleType, conn: Conn) -> bool:
    return bool(plugin.check_session(conn.sock))
