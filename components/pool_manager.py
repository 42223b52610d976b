"""Connection Pool Manager (CPM): pre-opened backend connections handed out over a Unix socket.

Pool protocol v1 (see components/protocol.py and the README): one JSON request line
per Unix-socket connection, one JSON reply line; a successful ``acquire`` carries the
connection's fd (SCM_RIGHTS) on the reply's first byte. The connection is the caller's
from then on: the manager closes its copy and never hands it out again.

Everything runs in one thread around one epoll set: accepting callers, reading their
requests, health-checking and handing out connections, and the background refill, whose
TCP connects are non-blocking (connect + EPOLLOUT) so a slow backend never stalls callers.
Blocking work (DNS resolution, plug-in session set-up and checks) runs in worker threads
that post results back through an eventfd.

Plug-in pool kinds
------------------
A pool whose config says ``"kind": "postgres"`` (module ``components.pg_pool``), or any
kind with ``"module": "dotted.name"``, gets its connections from that module, imported
lazily when the manager starts::

    def open_session(config: dict) -> tuple[socket.socket, dict]:
        '''Blocking. Return a connected, ready-to-use socket and the JSON-able ``meta``
        object sent in the acquire reply. ``config`` is the pool's whole config dict
        (PoolConfig.as_dict(): target, size, ... plus every extra key of the pool).
        Raise any exception to signal failure (counted, backed off, logged).'''

    def check_session(sock: socket.socket) -> bool:
        '''Blocking. True if the session may be handed out; False discards it.'''

Both run in worker threads, never on the event loop. Optional, called on the loop (must not block):
``close_session(sock)`` to end a session the manager discards (TTL, max idle, failed check,
shutdown) instead of a plain close, and ``session_meta(sock) -> dict | None`` for an up-to-date
``meta`` at hand-out, and ``quick_check(sock) -> bool | None``, a non-blocking verdict before
hand-out (None: run ``check_session`` in a worker). TTL and max idle apply as for TCP;
``release`` is refused for plug-in kinds.
"""

from __future__ import annotations

import _socket
import bisect
import contextlib
import errno
import importlib
import json
import os
import queue
import random
import resource
import select
import signal
import socket
import stat
import struct
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType, ModuleType
from typing import Any

from components.pool_config import ConfigError, ManagerConfig, PoolConfig, apply_socket_options, load_config
from components.pool_connector import ANC_SPACE as _CONNECTOR_ANC_SPACE
from components.pool_connector import start_connector
from components.protocol import MAX_REQUEST_BYTES, PROTOCOL_VERSION, format_peer, split_hostport

_AF_UNIX = socket.AF_UNIX
_SOCK_STREAM = socket.SOCK_STREAM
_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_PEERCRED = struct.Struct("3i")
_FD_SIZE = 4
_ANC_SPACE = socket.CMSG_SPACE(8 * _FD_SIZE)
_RECV_FLAGS = socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT
_SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
_PEEK_FLAGS = socket.MSG_PEEK | socket.MSG_DONTWAIT
_TCP_ESTABLISHED = 1
_HEALTH_EVENTS = select.POLLIN | select.POLLPRI | select.POLLRDHUP | select.POLLERR | select.POLLHUP
_TICK = 0.05  # timer resolution for request/borrow/connect deadlines
_LAT_BOUNDS_US = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 1_000_000)
_HANDED_MEMORY = 65536  # handed-out connections remembered so a release can be verified


class _Conn:
    """One pooled backend connection."""

    __slots__ = ("anc", "created", "expires", "fd", "idle_since", "local", "meta", "peer", "reply_tail", "sock")

    def __init__(self, sock: _socket.socket, peer: str, local: Any, meta: bytes, now: float, expires: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.local = local
        self.meta = meta
        self.created = now
        self.expires = expires
        self.idle_since = now
        # Prepared off the hot path (in the refill thread for TCP): the SCM_RIGHTS payload and
        # the reply after the hand-out id.
        self.anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", self.fd))]
        self.reply_tail = b',"meta":' + meta + b"}\n"


class _Client:
    """A caller connected to the Unix socket (one request per connection)."""

    __slots__ = ("allowed", "buf", "deadline", "fd", "gid", "pid", "pool", "registered", "sock", "t0", "uid")

    def __init__(self, sock: _socket.socket, now: float, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""
        self.t0 = now
        self.deadline = deadline
        self.registered = False
        self.allowed = False
        self.pool: Pool | None = None  # set while waiting for a connection
        try:
            self.pid, self.uid, self.gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
        except OSError:
            self.pid, self.uid, self.gid = 0, -1, -1


class Pool:
    def __init__(self, cfg: PoolConfig, plugin: ModuleType | None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.jname = json.dumps(cfg.name)
        self.plugin = plugin
        self.idle: deque[_Conn] = deque()
        self.waiters: deque[_Client] = deque()
        self.connecting = 0
        self.checking = 0  # plug-in sessions being checked before hand-out
        self.refreshing = 0  # idle plug-in sessions being proven alive in the background
        self.addrs: list[tuple[int, tuple[Any, ...]]] = []
        self.addrs_expire = 0.0
        self.resolving = False
        self.tcp_index = -1
        self.level = 0  # backoff level: consecutive failed connect rounds
        self.next_attempt = 0.0
        self.last_error = ""
        self.last_acquire = time.monotonic()  # start full; shrink to min_idle only after max_idle unused
        self.handed: OrderedDict[tuple[Any, str], float] = OrderedDict()
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
                "released_reused",
                "fallbacks_seen",
                "borrow_waits",
                "borrow_timeouts",
                "exhausted",
                "unavailable",
                "send_failures",
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


class _Stop(Exception):
    pass


class Manager:
    def __init__(self, cfg: ManagerConfig) -> None:
        self.cfg = cfg
        self.pools: dict[str, Pool] = {}
        for name, pcfg in cfg.pools.items():
            plugin = importlib.import_module(pcfg.plugin_module) if pcfg.kind != "tcp" else None
            self.pools[name] = Pool(pcfg, plugin)
        self.tcp_pools = [p for p in self.pools.values() if p.plugin is None]
        for i, pool in enumerate(self.tcp_pools):
            pool.tcp_index = i
        self.demand = [0] * len(self.tcp_pools)
        self.connector_pid = 0
        self.connector_chan: socket.socket | None = None
        if cfg.connector_process and self.tcp_pools:
            # Forked first: before any thread or epoll set exists in this process.
            self.connector_pid, self.connector_chan = start_connector([p.cfg for p in self.tcp_pools])
        self.ep = select.epoll()
        if self.connector_chan is not None:
            self.ep.register(self.connector_chan.fileno(), _EPOLLIN)
        self.poller = select.poll()
        self.clients: dict[int, _Client] = {}
        self.connecting: dict[int, tuple[Pool, _socket.socket, float]] = {}
        self.results: queue.SimpleQueue[tuple[str, Pool, Any]] = queue.SimpleQueue()
        self.evfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ep.register(self.evfd, _EPOLLIN)
        workers = max(1, sum(p.max_connecting for p in cfg.pools.values() if p.kind != "tcp")) + 1
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cpm")
        self.listener: socket.socket | None = None
        self.accepting = True
        self.stopping = False
        self.next_id = 0
        self.started = time.monotonic()
        self.requests = 0
        self.denied = 0
        self.errors: dict[str, int] = {}
        self.lat_counts = [0] * (len(_LAT_BOUNDS_US) + 1)
        self.logbuf: deque[str] = deque()
        self.ready_announced = False
        self.demand_pending = False
        self.log_grants = cfg.log_grants == "each"
        self._fast_requests: dict[bytes, tuple[str, Pool]] = {}
        self._fast_acquire: dict[bytes, Pool] = {}
        for name, pool in self.pools.items():
            for op in ("acquire", "release"):
                for sep in ((",", ":"), (", ", ": ")):
                    line = json.dumps({"v": PROTOCOL_VERSION, "op": op, "pool": name}, separators=sep)
                    self._fast_requests[line.encode() + b"\n"] = (op, pool)
                    if op == "acquire":
                        self._fast_acquire[line.encode() + b"\n"] = pool

    # ---------------------------------------------------------------- logging
    def log(self, event: str, level: str = "info", **fields: Any) -> None:
        rec = {"ts": round(time.time(), 6), "level": level, "event": event}
        rec.update(fields)
        self.logbuf.append(json.dumps(rec, separators=(",", ":"), default=str))

    def flush_log(self) -> None:
        lines = []
        buf = self.logbuf
        while buf:
            lines.append(buf.popleft())
        if lines:
            data = ("\n".join(lines) + "\n").encode()
            with contextlib.suppress(OSError):
                while data:
                    data = data[os.write(2, data) :]

    # ---------------------------------------------------------------- start-up
    def bind(self) -> None:
        cfg = self.cfg
        path = cfg.socket
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=cfg.socket_dir_mode if cfg.socket_dir_mode is not None else 0o750)
            os.chmod(directory, cfg.socket_dir_mode if cfg.socket_dir_mode is not None else 0o750)
        elif cfg.socket_dir_mode is not None:
            os.chmod(directory, cfg.socket_dir_mode)
        self._clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bind under a tight umask so the file never exists with looser permissions than asked.
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, cfg.socket_mode)
        sock.listen(4096)
        sock.setblocking(False)
        self.listener = sock
        self.ep.register(sock.fileno(), _EPOLLIN)
        self.log(
            "listening",
            socket=path,
            socket_mode=oct(cfg.socket_mode),
            dir_mode=oct(stat.S_IMODE(os.stat(directory).st_mode)),
            allow_uids=sorted(cfg.allow_uids),
            allow_gids=sorted(cfg.allow_gids),
        )

    def _clear_stale(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError:
            # Nobody listens: a crashed run left it behind.
            os.unlink(path)
            self.log("stale_socket_removed", socket=path)
            return
        finally:
            probe.close()
        raise ConfigError(f"another manager is listening on {path}")

    # ---------------------------------------------------------------- main loop
    def run(self) -> None:
        ep_poll = self.ep.poll
        lfd = self.listener.fileno() if self.listener else -1
        evfd = self.evfd
        clients = self.clients
        connecting = self.connecting
        chan_fd = self.connector_chan.fileno() if self.connector_chan is not None else -2
        next_tick = time.monotonic()
        next_sweep = next_tick + self.cfg.health_interval
        for pool in self.pools.values():
            self.refill(pool, next_tick)
        while not self.stopping:
            if self.demand_pending:
                self.flush_demand()
            events = ep_poll(_TICK, 1024)
            for fd, ev in events:
                if fd == lfd:
                    self.accept()
                elif fd in clients:
                    self.client_readable(clients[fd])
                elif fd == chan_fd:
                    self.connector_readable()
                    if self.connector_chan is None:
                        chan_fd = -2
                elif fd in connecting:
                    self.connect_done(fd, ev)
                elif fd == evfd:
                    self.drain_results()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + _TICK
                self.tick(now)
                if now >= next_sweep:
                    next_sweep = now + self.cfg.health_interval
                    self.sweep(now)
            if not self.ready_announced:
                self.announce_ready()
            if self.logbuf:
                self.flush_log()

    def announce_ready(self) -> None:
        if all(len(p.idle) >= p.cfg.size for p in self.pools.values()):
            self.ready_announced = True
            line = {
                "event": "ready",
                "socket": self.cfg.socket,
                "pools": {n: len(p.idle) for n, p in self.pools.items()},
            }
            self.log("ready", pools={n: len(p.idle) for n, p in self.pools.items()})
            self.flush_log()  # logs first: whoever waits for the ready line may read them next
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()

    # ---------------------------------------------------------------- callers
    def accept(self) -> None:
        listener = self.listener
        assert listener is not None
        now = time.monotonic()
        deadline = now + self.cfg.request_timeout
        clients = self.clients
        allow_uids, allow_gids = self.cfg.allow_uids, self.cfg.allow_gids
        for _ in range(256):
            if len(clients) >= self.cfg.max_clients:
                # Leave the rest in the backlog; resume when callers finish.
                self.ep.modify(listener.fileno(), 0)
                self.accepting = False
                self.log("max_clients_reached", level="warning", clients=len(clients))
                return
            try:
                # _accept() + the C socket type skip socket.accept()'s Python wrapper (enum look-ups
                # and a Python constructor per caller).
                fd, _ = listener._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log("accept_failed", level="error", error=exc.strerror)
                    return
                continue
            client = _Client(_socket.socket(_AF_UNIX, _SOCK_STREAM, 0, fd), time.monotonic(), deadline)
            client.allowed = client.uid in allow_uids or client.gid in allow_gids
            clients[client.fd] = client
            # Callers usually send right after connecting: try before paying for an epoll round.
            self.client_readable(client)

    def client_readable(self, client: _Client) -> None:
        if client.pool is not None:
            # A waiting caller that sends more or hangs up: drop it (its wait is over).
            self.close_client(client)
            return
        try:
            data, anc, _flags, _addr = client.sock.recvmsg(MAX_REQUEST_BYTES + 1, _ANC_SPACE, _RECV_FLAGS)
        except (BlockingIOError, InterruptedError):
            if not client.registered:
                client.registered = True
                self.ep.register(client.fd, _EPOLLIN)
            return
        except OSError:
            self.close_client(client)
            return
        if not anc and client.allowed and not client.buf:
            pool = self._fast_acquire.get(data)
            if pool is not None:
                # The common case, a complete plain acquire from an allowed caller: straight to hand-out.
                self.requests += 1
                self.acquire(client, pool)
                return
        fds = _fds(anc) if anc else []
        if not data:
            _close_fds(fds)
            self.close_client(client)
            return
        buf = client.buf + data if client.buf else data
        nl = buf.find(b"\n")
        if nl < 0:
            _close_fds(fds)  # an fd is only meaningful on a complete release request
            if len(buf) >= MAX_REQUEST_BYTES:
                self.reply_error(client, "bad_request", f"request line longer than {MAX_REQUEST_BYTES} bytes")
                return
            client.buf = buf
            if not client.registered:
                client.registered = True
                self.ep.register(client.fd, _EPOLLIN)
            return
        if nl + 1 > MAX_REQUEST_BYTES:
            _close_fds(fds)
            self.reply_error(client, "bad_request", f"request line longer than {MAX_REQUEST_BYTES} bytes")
            return
        self.handle_request(client, buf[: nl + 1], fds)

    def handle_request(self, client: _Client, line: bytes, fds: list[int]) -> None:
        self.requests += 1
        if not client.allowed:
            # Checked before parsing: a denied caller learns nothing about pools or ops.
            _close_fds(fds)
            self.denied += 1
            self.log("denied", level="warning", pid=client.pid, uid=client.uid, gid=client.gid)
            self.reply_error(client, "forbidden", f"uid {client.uid} / gid {client.gid} is not allowed")
            return
        fast = self._fast_requests.get(line)
        if fast is not None:
            op, pool = fast
            req: dict[str, Any] = {}
        else:
            try:
                obj = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                _close_fds(fds)
                self.reply_error(client, "bad_request", "request is not a JSON line")
                return
            if not isinstance(obj, dict):
                _close_fds(fds)
                self.reply_error(client, "bad_request", "request must be a JSON object")
                return
            req = obj
            if req.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
                _close_fds(fds)
                self.reply_error(client, "bad_request", f"unsupported protocol version {req.get('v')!r}")
                return
            raw_op = req.get("op")
            name = req.get("pool", self.cfg.default_pool)
            if not isinstance(raw_op, str) or not isinstance(name, str):
                _close_fds(fds)
                self.reply_error(client, "bad_request", "'op' and 'pool' must be strings")
                return
            op = raw_op
            found = self.pools.get(name)
            if op in ("acquire", "release", "report") and found is None:
                _close_fds(fds)
                self.reply_error(client, "unknown_pool", f"no pool named {name!r}")
                return
            pool = found or self.pools[self.cfg.default_pool]
        if op == "acquire":
            _close_fds(fds)
            self.acquire(client, pool)
        elif op == "release":
            self.release(client, pool, fds)
        elif op == "ping":
            _close_fds(fds)
            self.reply(client, b'{"ok":true,"op":"ping","v":1}\n')
        elif op == "stats":
            _close_fds(fds)
            self.reply(client, (json.dumps(self.stats_obj(), separators=(",", ":")) + "\n").encode())
        elif op == "report":
            _close_fds(fds)
            event = req.get("event")
            if event == "fallback":
                pool.stats["fallbacks_seen"] += 1
                self.log("fallback_reported", pool=pool.name, pid=client.pid, reason=str(req.get("reason", ""))[:200])
                self.reply(client, b'{"ok":true,"op":"report"}\n')
            else:
                self.reply_error(client, "bad_request", f"unknown report event {event!r}")
        else:
            _close_fds(fds)
            self.reply_error(client, "bad_request", f"unknown op {op!r}")

    def reply(self, client: _Client, data: bytes) -> None:
        with contextlib.suppress(OSError):
            client.sock.send(data, _SEND_FLAGS)
        self.close_client(client)

    def reply_error(self, client: _Client, code: str, detail: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        line = json.dumps({"ok": False, "error": code, "detail": detail}, separators=(",", ":")) + "\n"
        with contextlib.suppress(OSError):
            client.sock.send(line.encode(), _SEND_FLAGS)
            # Closing with unread input would reset the caller's read of this reply: drain a little first.
            for _ in range(16):
                if not client.sock.recv(65536, socket.MSG_DONTWAIT):
                    break
        self.close_client(client)

    def close_client(self, client: _Client) -> None:
        if self.clients.pop(client.fd, None) is None:
            return
        if client.pool is not None:
            with contextlib.suppress(ValueError):
                client.pool.waiters.remove(client)
            client.pool = None
        # close() drops the epoll registration too: nobody else holds this descriptor.
        client.sock.close()
        if not self.accepting and self.listener is not None and len(self.clients) < self.cfg.max_clients:
            self.accepting = True
            self.ep.modify(self.listener.fileno(), _EPOLLIN)

    # ---------------------------------------------------------------- acquire / release
    def acquire(self, client: _Client, pool: Pool) -> None:
        now = time.monotonic()
        pool.last_acquire = now
        if pool.plugin is None:
            conn = self.take_healthy(pool, now)
            if conn is not None:
                self.hand_out(client, pool, conn, now)
                self.refill(pool, now)
                return
        if not pool.idle and (pool.cfg.exhaustion == "refuse" or (pool.down and now < pool.next_attempt)):
            self.reject_unavailable(client, pool)
            self.refill(pool, now)
            return
        pool.stats["borrow_waits"] += 1
        client.pool = pool
        client.deadline = now + pool.cfg.borrow_timeout
        pool.waiters.append(client)
        # Watch the waiting caller so a hang-up gives up its place.
        if not client.registered:
            client.registered = True
            self.ep.register(client.fd, _EPOLLIN)
        self.refill(pool, now)
        if pool.plugin is not None:
            self.serve_plugin_waiters(pool)

    def reject_unavailable(self, client: _Client, pool: Pool) -> None:
        if pool.down:
            pool.stats["unavailable"] += 1
            self.reply_error(client, "backend_unavailable", f"pool {pool.name}: {pool.last_error or 'backend down'}")
        else:
            pool.stats["exhausted"] += 1
            self.reply_error(client, "pool_exhausted", f"pool {pool.name} has no idle connection")

    def take_healthy(self, pool: Pool, now: float) -> _Conn | None:
        idle = pool.idle
        while idle:
            conn = idle.popleft()
            if conn.expires <= now:
                pool.stats["discard_ttl"] += 1
                conn.sock.close()
                continue
            # Zero-timeout poll: anything readable (data or EOF), a hang-up or an error means the
            # connection is not safe to hand out. (Cheaper than a MSG_PEEK recv raising EAGAIN.)
            poller = self.poller
            poller.register(conn.fd, _HEALTH_EVENTS)
            ready = poller.poll(0)
            poller.unregister(conn.fd)
            if not ready:
                return conn
            pool.stats["discard_health"] += 1
            self.log("discard", pool=pool.name, reason=_unhealthy_reason(conn.sock), peer=conn.peer)
            conn.sock.close()
        return None

    def hand_out(self, client: _Client, pool: Pool, conn: _Conn, now: float) -> bool:
        self.next_id += 1
        hid = self.next_id
        # Time in the manager up to the reply (measured before sending: the woken caller may preempt us).
        self.lat_counts[bisect.bisect_left(_LAT_BOUNDS_US, (now - client.t0) * 1e6)] += 1
        reply = b'%s%s","id":%d%s' % (pool.reply_head, conn.peer.encode(), hid, conn.reply_tail)
        try:
            sent = client.sock.sendmsg([reply], conn.anc, _SEND_FLAGS)
        except OSError:
            # Not transferred: the connection is still only ours and still unused.
            pool.stats["send_failures"] += 1
            pool.idle.appendleft(conn)
            self.close_client(client)
            return False
        if sent < len(reply):
            # The fd went with the first byte; finish the line blocking-briefly (tiny, rare).
            with contextlib.suppress(OSError):
                client.sock.settimeout(0.2)
                client.sock.sendall(reply[sent:])
        pool.stats["handed_out"] += 1
        if pool.cfg.accept_release:
            handed = pool.handed
            handed[(conn.local, conn.peer)] = conn.created
            if len(handed) > _HANDED_MEMORY:
                handed.popitem(last=False)
        conn.sock.close()
        if self.log_grants:
            self.logbuf.append(
                f'{{"ts":{time.time():.6f},"level":"info","event":"grant","pool":{pool.jname},"id":{hid},'
                f'"pid":{client.pid},"uid":{client.uid},"gid":{client.gid},"peer":"{conn.peer}"}}'
            )
        self.close_client(client)
        return True

    def release(self, client: _Client, pool: Pool, fds: list[int]) -> None:
        if len(fds) != 1:
            _close_fds(fds)
            self.reply_error(client, "bad_request", "release needs exactly one fd attached to the request")
            return
        now = time.monotonic()
        fd = fds[0]
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            self.reply_error(client, "bad_request", "attached fd is not a socket")
            return
        reason = self.release_verdict(pool, sock)
        if reason:
            sock.close()
            pool.stats["discard_release"] += 1
            self.log("release_discarded", pool=pool.name, reason=reason, pid=client.pid, uid=client.uid)
            body = {"ok": True, "op": "release", "pool": pool.name, "reused": False, "reason": reason}
            self.reply(client, (json.dumps(body, separators=(",", ":")) + "\n").encode())
            return
        peer = format_peer(sock.getpeername())
        local = sock.getsockname()[:2]
        created = pool.handed.pop((local, peer))
        sock.setblocking(True)
        conn = _Conn(sock, peer, local, b"{}", now, float("inf"))
        conn.created = created
        conn.expires = pool.expiry(created) if pool.cfg.ttl > 0 else float("inf")
        pool.stats["released_reused"] += 1
        self.reply(client, b'{"ok":true,"op":"release","pool":%s,"reused":true}\n' % json.dumps(pool.name).encode())
        self.conn_ready(pool, conn, now)

    def release_verdict(self, pool: Pool, sock: socket.socket) -> str:
        """Empty string if a handed-back connection may be pooled again, else why not."""
        if not pool.cfg.accept_release or pool.plugin is not None:
            return "release_disabled"
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return "not_tcp"
        try:
            peer = format_peer(sock.getpeername())
            local = sock.getsockname()[:2]
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        except OSError:
            return "not_connected"
        if (local, peer) not in pool.handed:
            # Only connections this pool handed out come back: no foreign sockets get injected.
            return "unknown_connection"
        if err:
            return "socket_error"
        if state != _TCP_ESTABLISHED:
            return "half_closed"
        try:
            data = sock.recv(1, _PEEK_FLAGS)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            return "socket_error"
        if data == b"":
            return "eof"
        if data:
            return "unread_data"
        if len(pool.idle) + pool.connecting >= 2 * pool.cfg.size:
            return "pool_full"
        return ""

    def discard(self, pool: Pool, conn: _Conn) -> None:
        """Close a pooled connection we still own (plug-ins may end their session politely)."""
        closer = getattr(pool.plugin, "close_session", None) if pool.plugin is not None else None
        if closer is None:
            conn.sock.close()
            return
        try:
            closer(conn.sock)
        except Exception as exc:
            self.log("close_session_failed", level="warning", pool=pool.name, error=str(exc))
            conn.sock.close()

    def hand_out_session(self, pool: Pool, conn: _Conn, now: float) -> None:
        """Hand a checked plug-in session to the longest waiter, with its meta refreshed."""
        meta_of = getattr(pool.plugin, "session_meta", None)
        if meta_of is not None:
            # The session's parameters may have changed since it was opened.
            with contextlib.suppress(Exception):
                meta = meta_of(conn.sock)
                if meta is not None:
                    conn.reply_tail = b',"meta":' + json.dumps(meta, separators=(",", ":")).encode() + b"}\n"
        prepare = getattr(pool.plugin, "prepare_handout", None)
        if prepare is not None:
            # Last step before the fd leaves (tls: records that arrived are counted, keys added to
            # this reply only). A failure discards the session; the waiter keeps its place.
            try:
                handout_meta = prepare(conn.sock, None)
                conn.reply_tail = b',"meta":' + json.dumps(handout_meta, separators=(",", ":")).encode() + b"}\n"
            except Exception as exc:
                pool.stats["discard_health"] += 1
                self.log("discard", pool=pool.name, reason="prepare_handout", peer=conn.peer, error=str(exc)[:200])
                self.discard(pool, conn)
                self.refill(pool, now)
                return
        client = pool.waiters.popleft()
        client.pool = None
        self.hand_out(client, pool, conn, now)

    def serve_plugin_waiters(self, pool: Pool) -> None:
        quick = getattr(pool.plugin, "quick_check", None)
        while pool.idle and pool.checking < len(pool.waiters):
            conn = pool.idle.popleft()
            now = time.monotonic()
            if conn.expires <= now:
                pool.stats["discard_ttl"] += 1
                self.discard(pool, conn)
                continue
            verdict: bool | None = None
            if quick is not None:
                # A non-blocking verdict when the kind can give one: no worker-thread round trip
                # on the hand-out path for a session that was proven alive recently.
                try:
                    verdict = quick(conn.sock)
                except Exception:
                    verdict = None
            if verdict is False:
                pool.stats["discard_health"] += 1
                self.log("discard", pool=pool.name, reason="quick_check", peer=conn.peer)
                self.discard(pool, conn)
                self.refill(pool, now)
                continue
            if verdict is True:
                self.hand_out_session(pool, conn, now)
                continue
            pool.checking += 1
            self.submit("checked", pool, _run_check, pool.plugin, conn)

    # ---------------------------------------------------------------- refill
    def refill(self, pool: Pool, now: float) -> None:
        """Top the pool up: start connects (or plug-in session opens) up to the concurrency bound."""
        need = self._need(pool, now)
        while need > 0:
            if not self.start_connect(pool, now):
                return
            need -= 1

    def _connect_limit(self, pool: Pool) -> int:
        if pool.down:
            return 1  # one probe at a time until the backend answers again
        if pool.cfg.exhaustion == "connect":
            return pool.cfg.max_connecting + len(pool.waiters)  # on-demand connects for waiting callers
        return pool.cfg.max_connecting

    def _need(self, pool: Pool, now: float) -> int:
        if pool.down and now < pool.next_attempt:
            return 0
        need = pool.target_size(now) - len(pool.idle) - pool.connecting - pool.checking
        if pool.cfg.exhaustion == "connect" or pool.plugin is not None:
            # Connect on demand: one extra connection per waiting caller (plug-in pools always
            # open sessions for their waiters; they have no other refill path).
            need += len(pool.waiters)
        return min(need, self._connect_limit(pool) - pool.connecting)

    def flush_demand(self) -> None:
        chan = self.connector_chan
        self.demand_pending = False
        if chan is None:
            return
        msg = [[i, n] for i, n in enumerate(self.demand) if n]
        try:
            chan.send(json.dumps(msg, separators=(",", ":")).encode())
        except BlockingIOError:
            self.demand_pending = True  # channel full: the connector is busy, retry next round
            return
        except OSError as exc:
            self.connector_lost(f"send: {exc}")
            return
        for i in range(len(self.demand)):
            self.demand[i] = 0

    def connector_readable(self) -> None:
        chan = self.connector_chan
        assert chan is not None
        now = time.monotonic()
        touched: set[int] = set()
        for _ in range(64):
            try:
                data, anc, _flags, _addr = chan.recvmsg(1 << 20, _CONNECTOR_ANC_SPACE, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.connector_lost(str(exc))
                return
            fds = _fds(anc) if anc else []
            if not data:
                _close_fds(fds)
                self.connector_lost("connector process exited")
                return
            taken = 0
            for rec in json.loads(data):
                pool = self.tcp_pools[rec[0]]
                touched.add(rec[0])
                pool.connecting -= 1
                if rec[1] == "ok" and taken < len(fds):
                    sock = _socket.socket(rec[2], _SOCK_STREAM, 0, fds[taken])
                    taken += 1
                    local = (rec[4], rec[5]) if pool.cfg.accept_release else None
                    self.add_connection(pool, sock, rec[3], local, now)
                else:
                    self.connect_failed(pool, now, str(rec[2]))
            _close_fds(fds[taken:])
        for i in touched:
            self.refill(self.tcp_pools[i], now)

    def connector_lost(self, why: str) -> None:
        """The connector died: connect from the event loop from now on."""
        chan = self.connector_chan
        if chan is None:
            return
        self.log("connector_lost", level="error", error=why)
        self.connector_chan = None
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(chan.fileno())
        chan.close()
        self.reap_connector(0.0)
        for pool in self.tcp_pools:
            pool.connecting = sum(1 for p, _s, _d in self.connecting.values() if p is pool)
            self.demand[pool.tcp_index] = 0
        self.demand_pending = False

    def reap_connector(self, timeout: float) -> None:
        if not self.connector_pid:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, _status = os.waitpid(self.connector_pid, os.WNOHANG)
            except ChildProcessError:
                pid = self.connector_pid
            if pid:
                self.connector_pid = 0
                return
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.connector_pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.connector_pid, 0)
                self.connector_pid = 0
                return
            time.sleep(0.01)

    def expire_connects(self, now: float) -> None:
        for fd, (pool, sock, deadline) in list(self.connecting.items()):
            if deadline <= now:
                del self.connecting[fd]
                pool.connecting -= 1
                sock.close()  # closing drops it from epoll
                self.connect_failed(pool, now, "connect timed out")

    def start_connect(self, pool: Pool, now: float) -> bool:
        cfg = pool.cfg
        if pool.plugin is not None:
            pool.connecting += 1
            self.submit("opened", pool, _run_open, pool.plugin, cfg.as_dict())
            return True
        if self.connector_chan is not None:
            # The connector process connects (and resolves); demands go out once per loop round.
            pool.connecting += 1
            self.demand[pool.tcp_index] += 1
            self.demand_pending = True
            return True
        if now >= pool.addrs_expire:
            # getaddrinfo blocks: resolve in a worker thread, connect when the answer is back.
            if not pool.resolving:
                pool.resolving = True
                self.submit("resolved", pool, _resolve, cfg.target)
            return False
        family, addr = pool.addrs[0]
        # The C-level socket type: no Python-level constructor or close() wrapper on the hot path.
        sock = _socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            apply_socket_options(sock, cfg)
            err = sock.connect_ex(addr)
        except OSError as exc:
            sock.close()
            self.connect_failed(pool, now, exc.strerror or str(exc))
            return False
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.connect_failed(pool, now, os.strerror(err))
            return False
        try:
            # Over loopback or a veth pair the handshake completes inside connect(): skip the epoll round.
            peer_addr = sock.getpeername()
        except OSError:
            fd = sock.fileno()
            pool.connecting += 1
            self.connecting[fd] = (pool, sock, now + cfg.connect_timeout)
            self.ep.register(fd, _EPOLLOUT)
            return True
        self.connected(pool, sock, peer_addr, now)
        return True

    def connect_done(self, fd: int, ev: int) -> None:
        pool, sock, _deadline = self.connecting.pop(fd)
        pool.connecting -= 1
        self.ep.unregister(fd)
        now = time.monotonic()
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        try:
            if err:
                raise OSError(err, os.strerror(err))
            peer_addr = sock.getpeername()
        except OSError as exc:
            sock.close()
            self.connect_failed(pool, now, exc.strerror or str(exc))
            return
        self.connected(pool, sock, peer_addr, now)
        self.refill(pool, now)

    def connected(self, pool: Pool, sock: _socket.socket, peer_addr: tuple[Any, ...], now: float) -> None:
        try:
            # The local address identifies the connection if it is handed back (op release).
            local = sock.getsockname()[:2] if pool.cfg.accept_release else None
            sock.setblocking(True)  # O_NONBLOCK travels with the fd: hand out blocking sockets
        except OSError as exc:
            sock.close()
            self.connect_failed(pool, now, exc.strerror or str(exc))
            return
        peer = pool.peer_names.get(peer_addr)
        if peer is None:
            peer = pool.peer_names[peer_addr] = format_peer(peer_addr)
        self.add_connection(pool, sock, peer, local, now)

    def add_connection(self, pool: Pool, sock: _socket.socket, peer: str, local: Any, now: float) -> None:
        pool.stats["refills"] += 1
        if pool.level:
            self.log("backend_up", pool=pool.name, peer=peer)
            pool.level = 0
            pool.last_error = ""
        self.conn_ready(pool, _Conn(sock, peer, local, b"{}", now, pool.expiry(now)), now)

    def conn_ready(self, pool: Pool, conn: _Conn, now: float) -> None:
        pool.idle.append(conn)
        if pool.plugin is not None:
            self.serve_plugin_waiters(pool)
        elif pool.waiters:
            self.serve_waiters(pool, now)

    def serve_waiters(self, pool: Pool, now: float) -> None:
        """Give idle connections to waiting callers, or tell them the backend is down."""
        while pool.waiters:
            conn = self.take_healthy(pool, now)
            if conn is None:
                break
            client = pool.waiters.popleft()
            client.pool = None
            self.hand_out(client, pool, conn, now)  # on failure the connection goes back to idle
        if pool.waiters and pool.down and not pool.idle and pool.connecting == 0:
            self.reject_waiters(pool, pool.last_error or "backend down")

    def reject_waiters(self, pool: Pool, error: str) -> None:
        while pool.waiters:
            client = pool.waiters.popleft()
            client.pool = None
            pool.stats["unavailable"] += 1
            self.reply_error(client, "backend_unavailable", f"pool {pool.name}: {error}")

    def connect_failed(self, pool: Pool, now: float, error: str) -> None:
        pool.stats["connect_failures"] += 1
        pool.last_error = error
        if now >= pool.next_attempt:
            # One backoff step per failed round, however many connects were in flight.
            pool.level += 1
            delay = min(pool.cfg.backoff_max, pool.cfg.backoff_initial * (2 ** (pool.level - 1)))
            pool.next_attempt = now + delay * (0.5 + random.random() / 2)
            if pool._literal is None:
                pool.addrs_expire = 0.0  # re-resolve: the backend may have moved
            self.log("connect_failed", level="warning", pool=pool.name, error=error, retry_in_s=round(delay, 3))
        if pool.connecting == 0 and not pool.idle and pool.waiters:
            # Nothing can arrive soon: let waiting callers fall back now instead of at their deadline.
            self.reject_waiters(pool, error)

    # ---------------------------------------------------------------- worker results
    def submit(self, kind: str, pool: Pool, fn: Callable[..., Any], *args: Any) -> None:
        results, evfd = self.results, self.evfd

        def job() -> None:
            try:
                out: Any = (True, fn(*args))
            except BaseException as exc:
                out = (False, exc)
            results.put((kind, pool, (out, args)))
            with contextlib.suppress(OSError):
                os.eventfd_write(evfd, 1)

        self.executor.submit(job)

    def drain_results(self) -> None:
        """Woken by the eventfd: results of worker-thread jobs (resolution, plug-in sessions)."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.evfd)
        now = time.monotonic()
        while True:
            try:
                kind, pool, ((ok, value), args) = self.results.get_nowait()
            except queue.Empty:
                return
            if kind == "resolved":
                pool.resolving = False
                if ok and value:
                    pool.addrs = value
                    pool.addrs_expire = now + pool.cfg.resolve_ttl
                    self.refill(pool, now)
                else:
                    self.connect_failed(pool, now, f"resolve {pool.cfg.target}: {value}")
            elif kind == "opened":
                pool.connecting -= 1
                if not ok:
                    self.connect_failed(pool, now, f"{type(value).__name__}: {value}")
                    continue
                sock, meta = value
                try:
                    sock.setblocking(True)
                    peer = format_peer(sock.getpeername())
                    local = sock.getsockname()
                    meta_json = json.dumps(meta, separators=(",", ":")).encode()
                except (OSError, TypeError, ValueError) as exc:
                    sock.close()
                    self.connect_failed(pool, now, f"plug-in session unusable: {exc}")
                    continue
                pool.stats["refills"] += 1
                pool.level = 0
                self.conn_ready(pool, _Conn(sock, peer, local, meta_json, now, pool.expiry(now)), now)
                self.refill(pool, now)
            elif kind == "refreshed":
                # A background proof of life of an idle session, off the hand-out path.
                pool.refreshing -= 1
                conn: _Conn = args[1]
                if not (ok and value):
                    pool.stats["discard_health"] += 1
                    self.log("discard", pool=pool.name, reason="check_session", peer=conn.peer)
                    self.discard(pool, conn)
                    self.refill(pool, now)
                else:
                    pool.idle.append(conn)
                    self.serve_plugin_waiters(pool)
            elif kind == "checked":
                pool.checking -= 1
                conn = args[1]
                if not (ok and value):
                    pool.stats["discard_health"] += 1
                    self.log("discard", pool=pool.name, reason="check_session", peer=conn.peer)
                    self.discard(pool, conn)
                elif pool.waiters:
                    self.hand_out_session(pool, conn, now)
                else:
                    pool.idle.appendleft(conn)
                self.refill(pool, now)
                self.serve_plugin_waiters(pool)

    # ---------------------------------------------------------------- timers
    def tick(self, now: float) -> None:
        for client in [c for c in self.clients.values() if c.deadline <= now]:
            pool = client.pool
            if pool is None:
                self.reply_error(client, "timeout", f"no complete request within {self.cfg.request_timeout}s")
            else:
                pool.stats["borrow_timeouts"] += 1
                self.reject_unavailable(client, pool)
        if self.connecting:
            self.expire_connects(now)
        for pool in self.pools.values():
            if pool.plugin is None and pool.waiters:
                self.serve_waiters(pool, now)
            self.refill(pool, now)

    def sweep(self, now: float) -> None:
        """Drop expired, long-idle and peer-closed idle connections (rotating the deque in place)."""
        for pool in self.pools.values():
            idle = pool.idle
            remaining = len(idle)
            floor = pool.cfg.min_idle
            max_idle = pool.cfg.max_idle
            for _ in range(remaining):
                try:
                    conn = idle.popleft()
                except IndexError:
                    break
                reason = ""
                if conn.expires <= now:
                    reason = "ttl"
                elif max_idle > 0 and now - conn.idle_since > max_idle and remaining > floor:
                    reason = "idle"
                elif pool.plugin is not None:
                    if self._needs_refresh(pool, conn):
                        # Prove an idle session alive now (a round trip in a worker thread), so a
                        # later hand-out takes the non-blocking path instead of waiting for it.
                        pool.refreshing += 1
                        remaining -= 1
                        self.submit("refreshed", pool, _run_check, pool.plugin, conn)
                        continue
                else:
                    try:
                        peek = conn.sock.recv(1, _PEEK_FLAGS)
                        reason = "health"
                        self.log("discard", pool=pool.name, reason="eof" if not peek else "unread_data", peer=conn.peer)
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        reason = "health"
                        self.log("discard", pool=pool.name, reason="error", peer=conn.peer)
                if reason:
                    pool.stats["discard_" + reason] += 1
                    self.discard(pool, conn)
                    remaining -= 1
                else:
                    idle.append(conn)
            self.refill(pool, now)

    @staticmethod
    def _needs_refresh(pool: Pool, conn: _Conn) -> bool:
        quick = getattr(pool.plugin, "quick_check", None)
        if quick is None:
            return False
        try:
            return quick(conn.sock) is None
        except Exception:
            return True

    # ---------------------------------------------------------------- stats / shutdown
    def stats_obj(self) -> dict[str, Any]:
        now = time.monotonic()
        pools = {}
        for name, pool in self.pools.items():
            pools[name] = {
                "kind": pool.cfg.kind,
                "target": pool.cfg.target,
                "size": pool.cfg.size,
                "min_idle": pool.cfg.min_idle,
                "idle": len(pool.idle),
                "connecting": pool.connecting + pool.checking,
                "waiters": len(pool.waiters),
                "backend_up": not pool.down,
                "last_error": pool.last_error,
                "exhaustion": pool.cfg.exhaustion,
                **pool.stats,
                "discards": pool.stats["discard_health"]
                + pool.stats["discard_ttl"]
                + pool.stats["discard_idle"]
                + pool.stats["discard_release"],
            }
        total = sum(self.lat_counts)
        return {
            "ok": True,
            "op": "stats",
            "uptime_s": round(now - self.started, 3),
            "pools": pools,
            "requests": self.requests,
            "clients": len(self.clients),
            "denied": self.denied,
            "errors": dict(self.errors),
            "open_fds": _open_fds(),
            "acquire_latency_us": {
                "bounds": list(_LAT_BOUNDS_US),
                "counts": list(self.lat_counts),
                "count": total,
                "p50": _hist_quantile(self.lat_counts, 0.5),
                "p99": _hist_quantile(self.lat_counts, 0.99),
            },
        }

    def close(self) -> None:
        if self.connector_chan is not None:
            self.connector_chan.close()  # EOF tells the connector to exit
            self.connector_chan = None
            self.reap_connector(2.0)
        for client in list(self.clients.values()):
            self.close_client(client)
        for _pool, sock, _deadline in self.connecting.values():
            sock.close()
        self.connecting.clear()
        for pool in self.pools.values():
            for conn in pool.idle:
                self.discard(pool, conn)
            pool.idle.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.cfg.socket)
        self.ep.close()
        os.close(self.evfd)


def _unhealthy_reason(sock: _socket.socket) -> str:
    try:
        return "eof" if sock.recv(1, _PEEK_FLAGS) == b"" else "unread_data"
    except (BlockingIOError, InterruptedError):
        return "hangup"
    except OSError as exc:
        return f"error: {exc.strerror or exc}"


def _fds(anc: list[tuple[int, int, bytes]]) -> list[int]:
    out: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            n = len(data) // _FD_SIZE
            out.extend(struct.unpack(f"{n}i", data[: n * _FD_SIZE]))
    return out


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the listing's own descriptor
    except OSError:
        return -1


def _hist_quantile(counts: list[int], q: float) -> float | None:
    """Upper bound of the bucket holding quantile q (conservative)."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return float(_LAT_BOUNDS_US[i]) if i < len(_LAT_BOUNDS_US) else float("inf")
    return None


def _resolve(target: str) -> list[tuple[int, tuple[Any, ...]]]:
    host, port = split_hostport(target)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Prefer IPv4: the docker bridge network the manager runs on is IPv4.
    infos.sort(key=lambda i: 0 if i[0] == socket.AF_INET else 1)
    return [(int(i[0]), i[4]) for i in infos]


def _run_open(plugin: ModuleType, config: dict[str, Any]) -> tuple[socket.socket, dict[str, Any]]:
    sock, meta = plugin.open_session(config)
    return sock, dict(meta)


def _run_check(plugin: ModuleType, conn: _Conn) -> bool:
    return bool(plugin.check_session(conn.sock))


def raise_fd_limit(cfg: ManagerConfig) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; refuse a configuration that cannot fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    need = cfg.fd_budget()
    if need > soft:
        raise ConfigError(
            f"pools need up to {need} file descriptors (2 x size + max_connecting per pool, "
            f"+ max_clients {cfg.max_clients} + 64) but RLIMIT_NOFILE allows {soft} (hard limit {hard}); "
            f"lower --size/--max-clients or raise the limit (ulimit -n, docker --ulimit nofile=N:N)"
        )
    return soft, need


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = load_config(argv)
        limit, need = raise_fd_limit(cfg)
    except ConfigError as exc:
        sys.stderr.write(
            json.dumps({"ts": time.time(), "level": "error", "event": "config_error", "error": str(exc)}) + "\n"
        )
        return 2
    try:
        manager = Manager(cfg)
    except ImportError as exc:
        sys.stderr.write(
            json.dumps({"ts": time.time(), "level": "error", "event": "plugin_import_failed", "error": str(exc)}) + "\n"
        )
        return 2

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        manager.stopping = True
        with contextlib.suppress(OSError):
            os.eventfd_write(manager.evfd, 1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    manager.log("starting", pools={n: p.as_dict() for n, p in cfg.pools.items()}, nofile=limit, fd_budget=need)
    try:
        manager.bind()
    except (ConfigError, OSError) as exc:
        manager.log("bind_failed", level="error", error=str(exc))
        manager.flush_log()
        manager.close()
        return 2
    try:
        manager.run()
    finally:
        manager.log("stopped", requests=manager.requests)
        manager.flush_log()
        manager.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
