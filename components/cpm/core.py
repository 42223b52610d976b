"""The core every room of the manager builds on: its state, logging, replies and worker jobs.

The manager is one object assembled from rooms (``components.cpm.manager.Manager``): the event
loop and client protocol (``server``), pool policy (``policy``), refill and connector
(``refill``) and stats (``stats``). Each room is a class over this core; methods one room calls
in another are declared here for the type checker only.
"""

from __future__ import annotations

import _socket
import contextlib
import importlib
import json
import os
import queue
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from components.cpm.handoff import FD_PASSING
from components.cpm.model import (
    EPOLLIN,
    EPOLLOUT,
    LAT_BOUNDS_US,
    SEND_FLAGS,
    Client,
    Conn,
    Pool,
    close_fds,
    cookies_supported,
    socket_cookie,
)
from components.pool_config import ConfigError, ManagerConfig
from components.pool_connector import start_connector
from components.protocol import PROTOCOL_VERSION
from components.relay import RelayHub

PLUGIN_ENTRY_POINTS = ("open_session", "check_session")
ACCEPT_BACKOFF_MIN = 0.01  # seconds the listener rests after running out of descriptors, doubling
ACCEPT_BACKOFF_MAX = 1.0
ACCEPT_LOG_WINDOW = 10.0  # at most one line about failed accepts per window
REPLY_DRAIN_S = 5.0  # a reply larger than the socket buffer has at least this long to be read
LOG_QUEUE_LINES = 20_000  # log lines waiting for a slow stderr; beyond, lines are dropped and counted


class LogWriter:
    """Writes log lines to stderr from a thread of its own, through a bounded queue.

    A stderr pipe nobody drains blocks only this thread; when the queue is full, new lines are
    dropped and counted, and a ``log_dropped`` line says how many once lines flow again."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()
        self.dropped = 0  # since the start
        self.unreported = 0
        self.cond = threading.Condition()
        self.busy = False
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="cpm-log", daemon=True)
        self.thread.start()

    def put(self, buf: deque[str]) -> None:
        with self.cond:
            room = LOG_QUEUE_LINES - len(self.lines)
            while buf and room > 0:
                self.lines.append(buf.popleft())
                room -= 1
            if buf:
                self.dropped += len(buf)
                self.unreported += len(buf)
                buf.clear()
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.lines and not self.closed:
                    self.cond.wait()
                if not self.lines:
                    return
                batch = list(self.lines)
                self.lines.clear()
                if self.unreported and len(batch) < LOG_QUEUE_LINES:
                    note = {"ts": round(time.time(), 6), "level": "warning", "event": "log_dropped"}
                    batch.append(json.dumps({**note, "count": self.unreported}, separators=(",", ":")))
                    self.unreported = 0
                self.busy = True
            data = ("\n".join(batch) + "\n").encode()
            with contextlib.suppress(OSError):
                while data:
                    data = data[os.write(2, data) :]
            with self.cond:
                self.busy = False
                self.cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait (bounded) until every queued line is written."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.lines or self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def close(self, timeout: float) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join(timeout)


class ManagerCore:
    """State shared by the rooms, logging, replies to callers, worker-thread jobs."""

    def __init__(self, cfg: ManagerConfig) -> None:
        self.cfg = cfg
        self.pools: dict[str, Pool] = {}
        for name, pcfg in cfg.pools.items():
            plugin = importlib.import_module(pcfg.plugin_module) if pcfg.kind != "tcp" else None
            if plugin is not None:
                missing = [f for f in PLUGIN_ENTRY_POINTS if not callable(getattr(plugin, f, None))]
                if missing:
                    raise ConfigError(
                        f"pool {name!r}: plug-in module {pcfg.plugin_module!r} has no {' or '.join(missing)}()"
                    )
            self.pools[name] = Pool(pcfg, plugin)
            self.pools[name].handoff = FD_PASSING
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
            self.ep.register(self.connector_chan.fileno(), EPOLLIN)
        self.poller = select.poll()
        self.clients: dict[int, Client] = {}
        self.allowed_clients = 0  # callers whose credentials pass: bounded by max_clients
        self.denied_clients = 0  # denied callers kept until their error line is sent: DENIED_SLOTS
        self.denials_logged = 0  # denials logged one by one in the current window
        self.denials_unlogged = 0
        self.denial_window_until = 0.0
        self.next_settle = float("inf")  # earliest end of a fresh connection's settle period
        self.next_refill = float("inf")  # when the refills deferred after hand-outs are due
        self.refill_defer = cfg.refill_defer_ms / 1000.0
        self.next_sweep = 0.0
        # Released sockets are recognised by the kernel's socket cookie; without it (old kernels)
        # by their address pair, which a caller on the same host could rebuild.
        self.release_identity = "so_cookie" if cookies_supported() else "address_pair"
        self.connecting: dict[int, tuple[Pool, _socket.socket, float]] = {}
        self.results: queue.SimpleQueue[tuple[str, Pool, Any]] = queue.SimpleQueue()
        self.evfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ep.register(self.evfd, EPOLLIN)
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
        self.lat_counts = [0] * (len(LAT_BOUNDS_US) + 1)
        self.logbuf: deque[str] = deque()
        self.log_writer = LogWriter()
        self.parked_fds = 0  # fds attached to request lines still arriving, all callers together
        self.pending_by_uid: dict[int, int] = {}  # callers still sending their line, per uid
        self.busy_refused = 0
        self.accept_paused_until = 0.0  # out of descriptors: the listener rests until then
        self.accept_backoff = ACCEPT_BACKOFF_MIN
        self.accept_failures = 0  # accepts failed for lack of descriptors since the last log line
        self.accept_log_until = 0.0
        self.busy_log_until = 0.0
        self.peergroups_supported = True
        self.signals_pending: set[int] = set()  # set by signal handlers, handled on the loop
        self.argv: list[str] | None = None  # the command line, for a reload (SIGHUP)
        self.ready_announced = False
        self.demand_pending = False
        self.log_grants = cfg.log_grants == "each"
        self.relay_hub: RelayHub | None = None  # made on the first relayed hand-out (relaying.py)
        self.relay_hub_fd = -3
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
        """Hand the buffered lines to the writer thread: a stderr nobody reads never stalls the loop."""
        if self.logbuf:
            self.log_writer.put(self.logbuf)

    def release_key(self, sock: Any, peer: str) -> Any:
        """What identifies a handed-out socket when it comes back (op release)."""
        if self.release_identity == "so_cookie":
            return socket_cookie(sock)
        try:
            return (sock.getsockname()[:2], peer)
        except OSError:
            return None

    def reply(self, client: Client, data: bytes) -> None:
        """Send the whole reply, then close: what one send cannot take goes out as the socket drains."""
        self.unpend(client)
        try:
            sent = client.sock.send(data, SEND_FLAGS)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = len(data)
        if sent >= len(data):
            self.close_client(client)
            return
        client.out = data[sent:]
        client.deadline = time.monotonic() + max(self.cfg.request_timeout, REPLY_DRAIN_S)
        if client.registered:
            self.ep.modify(client.fd, EPOLLOUT)
        else:
            client.registered = True
            self.ep.register(client.fd, EPOLLOUT)

    def client_writable(self, client: Client) -> None:
        try:
            sent = client.sock.send(client.out, SEND_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close_client(client)
            return
        client.out = client.out[sent:]
        if not client.out:
            self.close_client(client)

    def unpend(self, client: Client) -> None:
        """The caller's request line is complete (or it is gone): it no longer counts for its uid."""
        if client.pending:
            client.pending = False
            left = self.pending_by_uid[client.uid] - 1
            if left:
                self.pending_by_uid[client.uid] = left
            else:
                del self.pending_by_uid[client.uid]

    def reply_error(self, client: Client, code: str, detail: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        line = json.dumps({"ok": False, "error": code, "detail": detail}, separators=(",", ":")) + "\n"
        with contextlib.suppress(OSError):
            client.sock.send(line.encode(), SEND_FLAGS)
            # Closing with unread input would reset the caller's read of this reply: drain a little first.
            for _ in range(16):
                if not client.sock.recv(65536, socket.MSG_DONTWAIT):
                    break
        self.close_client(client)

    def close_client(self, client: Client) -> None:
        if self.clients.pop(client.fd, None) is None:
            return
        if client.pool is not None:
            with contextlib.suppress(ValueError):
                client.pool.waiters.remove(client)
            client.pool = None
        if client.fds:
            self.parked_fds -= len(client.fds)
            close_fds(client.fds)
            client.fds = []
        self.unpend(client)
        if client.allowed:
            self.allowed_clients -= 1
        else:
            self.denied_clients -= 1
        # close() drops the epoll registration too: nobody else holds this descriptor.
        client.sock.close()
        if (
            not self.accepting
            and self.listener is not None
            and self.allowed_clients < self.cfg.max_clients
            and not self.accept_paused_until
        ):
            self.accepting = True
            self.ep.modify(self.listener.fileno(), EPOLLIN)

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

    if TYPE_CHECKING:
        # Provided by the other rooms (see the module docstring).
        def refill(self, pool: Pool, now: float) -> None: ...
        def refill_soon(self, pool: Pool, now: float) -> None: ...
        def refill_deferred(self, now: float) -> None: ...
        def connect_failed(self, pool: Pool, now: float, error: str) -> None: ...
        def conn_ready(self, pool: Pool, conn: Conn, now: float) -> None: ...
        def reap_connector(self, timeout: float) -> None: ...
        def serve_waiters(self, pool: Pool, now: float) -> None: ...
        def serve_plugin_waiters(self, pool: Pool) -> None: ...
        def hand_out_session(self, pool: Pool, conn: Conn, now: float) -> None: ...
        def discard(self, pool: Pool, conn: Conn) -> None: ...
        def reject_unavailable(self, client: Client, pool: Pool) -> None: ...
        def acquire(self, client: Client, pool: Pool) -> None: ...
        def release(self, client: Client, pool: Pool, fds: list[int]) -> None: ...
        def stats_obj(self) -> dict[str, Any]: ...
        def reject_waiters(self, pool: Pool, error: str) -> None: ...
        def sweep(self, now: float) -> None: ...
        def flush_demand(self) -> None: ...
        def connector_readable(self) -> None: ...
        def connect_done(self, fd: int, ev: int) -> None: ...
        def drain_results(self) -> None: ...
        def expire_connects(self, now: float) -> None: ...
        def promote_settled(self, now: float) -> None: ...
        def is_quiet(self, conn: Conn) -> bool: ...
        def note_discard(self, pool: Pool, reason: str, peer: str, now: float) -> None: ...
        def flush_discards(self, pool: Pool) -> None: ...
        def handoff_for(self, pool: Pool, name: Any) -> Any: ...
        def relay_available(self) -> bool: ...
        def relay_poll(self) -> None: ...
        def relay_tick(self, now: float) -> None: ...
        def relay_stats(self) -> dict[str, Any]: ...
        def relay_shutdown(self) -> None: ...
        def backend_room(self, pool: Pool, now: float) -> int: ...
        def backend_held(self, pool: Pool) -> int: ...
        def note_handed_out(self, pool: Pool, conn: Conn) -> None: ...
        def cap_detail(self, pool: Pool) -> str: ...
