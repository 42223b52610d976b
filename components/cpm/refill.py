"""Room: refill — non-blocking connects, the connector process, plug-in session opens, backoff."""

from __future__ import annotations

import _socket
import contextlib
import errno
import json
import os
import queue
import random
import signal
import socket
import time
from typing import Any

from components.cpm.backend_cap import diag_id
from components.cpm.core import ManagerCore
from components.cpm.model import (
    EPOLLOUT,
    SOCK_STREAM,
    Conn,
    Pool,
    close_fds,
    fds_of,
    resolve,
    run_open,
    unhealthy_reason,
)
from components.cpm.release_check import traffic
from components.pool_config import apply_socket_options
from components.pool_connector import ANC_SPACE as CONNECTOR_ANC_SPACE
from components.protocol import format_peer


class RefillRoom(ManagerCore):
    # ---------------------------------------------------------------- refill
    def refill(self, pool: Pool, now: float) -> None:
        """Top the pool up: start connects (or plug-in session opens) up to the concurrency bound."""
        need = self._need(pool, now)
        while need > 0:
            if not self.start_connect(pool, now):
                return
            need -= 1

    def refill_soon(self, pool: Pool, now: float) -> None:
        """After a hand-out: refill `refill_defer` later, once the woken caller has had the CPU (the
        kernel tends to queue it on the manager's CPU, behind whatever the manager does next). At
        once when deferral is off, or the pool is down to half its target: never risk running dry."""
        if self.refill_defer <= 0 or 2 * (len(pool.idle) + len(pool.settling) + pool.connecting) < pool.target_size(
            now
        ):
            self.refill(pool, now)
            return
        self.next_refill = min(self.next_refill, now + self.refill_defer)

    def refill_deferred(self, now: float) -> None:
        self.next_refill = float("inf")
        for pool in self.pools.values():
            self.refill(pool, now)

    def _connect_limit(self, pool: Pool) -> int:
        if pool.down:
            return 1  # one probe at a time until the backend answers again
        if pool.cfg.exhaustion == "connect":
            return pool.cfg.max_connecting + len(pool.waiters)  # on-demand connects for waiting callers
        return pool.cfg.max_connecting

    def _need(self, pool: Pool, now: float) -> int:
        if pool.down and now < pool.next_attempt:
            return 0
        need = pool.target_size(now) - len(pool.idle) - len(pool.settling) - pool.connecting - pool.checking
        need -= pool.refreshing  # idle sessions out for a background proof of life come back
        if pool.cfg.exhaustion == "connect" or pool.plugin is not None:
            # Connect on demand: one extra connection per waiting caller (plug-in pools always
            # open sessions for their waiters; they have no other refill path).
            need += len(pool.waiters)
        return min(need, self._connect_limit(pool) - pool.connecting, self.backend_room(pool, now))

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
                data, anc, _flags, _addr = chan.recvmsg(1 << 20, CONNECTOR_ANC_SPACE, socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.connector_lost(str(exc))
                return
            fds = fds_of(anc) if anc else []
            if not data:
                close_fds(fds)
                self.connector_lost("connector process exited")
                return
            taken = 0
            for rec in json.loads(data):
                pool = self.tcp_pools[rec[0]]
                touched.add(rec[0])
                pool.connecting -= 1
                if rec[1] == "ok" and taken < len(fds):
                    sock = _socket.socket(rec[2], SOCK_STREAM, 0, fds[taken])
                    taken += 1
                    self.add_connection(pool, sock, rec[3], now)
                else:
                    self.connect_failed(pool, now, str(rec[2]))
            close_fds(fds[taken:])
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
                index = pool.connect_addr.pop(fd, pool.addr_index)
                sock.close()  # closing drops it from epoll
                if self.address_failed(pool, index, now, "connect timed out"):
                    self.refill(pool, now)

    def start_connect(self, pool: Pool, now: float) -> bool:
        cfg = pool.cfg
        if pool.plugin is not None:
            pool.connecting += 1
            self.submit("opened", pool, run_open, pool.plugin, cfg.session_dict())
            return True
        if self.connector_chan is not None:
            # The connector process connects (and resolves); demands go out once per loop round.
            pool.connecting += 1
            self.demand[pool.tcp_index] += 1
            self.demand_pending = True
            return True
        if now >= pool.addrs_expire:
            # getaddrinfo blocks: resolve in a worker thread; connect to the last good addresses
            # meanwhile, or when there are none, once the answer is back.
            if not pool.resolving:
                pool.resolving = True
                self.submit("resolved", pool, resolve, cfg.target)
            if not pool.addrs:
                return False
        index = pool.addr_index % len(pool.addrs)
        family, addr = pool.addrs[index]
        # The C-level socket type: no Python-level constructor or close() wrapper on the hot path.
        sock = _socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            apply_socket_options(sock, cfg)
            err = sock.connect_ex(addr)
        except OSError as exc:
            sock.close()
            return self.address_failed(pool, index, now, exc.strerror or str(exc))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            return self.address_failed(pool, index, now, os.strerror(err))
        try:
            # Over loopback or a veth pair the handshake completes inside connect(): skip the epoll round.
            peer_addr = sock.getpeername()
        except OSError:
            fd = sock.fileno()
            pool.connecting += 1
            pool.connect_addr[fd] = index
            self.connecting[fd] = (pool, sock, now + cfg.connect_timeout)
            self.ep.register(fd, EPOLLOUT)
            return True
        self.connected(pool, sock, peer_addr, now)
        return True

    def connect_done(self, fd: int, ev: int) -> None:
        pool, sock, _deadline = self.connecting.pop(fd)
        pool.connecting -= 1
        index = pool.connect_addr.pop(fd, pool.addr_index)
        self.ep.unregister(fd)
        now = time.monotonic()
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        try:
            if err:
                raise OSError(err, os.strerror(err))
            peer_addr = sock.getpeername()
        except OSError as exc:
            sock.close()
            if self.address_failed(pool, index, now, exc.strerror or str(exc)):
                self.refill(pool, now)
            return
        self.connected(pool, sock, peer_addr, now)
        self.refill(pool, now)

    def connected(self, pool: Pool, sock: _socket.socket, peer_addr: tuple[Any, ...], now: float) -> None:
        try:
            sock.setblocking(True)  # O_NONBLOCK travels with the fd: hand out blocking sockets
        except OSError as exc:
            sock.close()
            self.connect_failed(pool, now, exc.strerror or str(exc))
            return
        peer = pool.peer_names.get(peer_addr)
        if peer is None:
            peer = pool.peer_names[peer_addr] = format_peer(peer_addr)
        self.add_connection(pool, sock, peer, now)

    def add_connection(self, pool: Pool, sock: _socket.socket, peer: str, now: float) -> None:
        """A fresh TCP connection settles first: a backend that accepts and closes at once, or
        greets first, shows it (FIN or data) within the settle period; only then is it checked
        and, if quiet, pooled (``promote_settled``)."""
        pool.stats["refills"] += 1
        pool.addrs_failed = 0
        if peer != pool.address:
            self.log("address_in_use", pool=pool.name, address=peer, previous=pool.address or None)
            pool.address = peer
        key = self.release_key(sock, peer) if pool.cfg.accept_release else None
        conn = Conn(sock, peer, key, b"{}", now, pool.expiry(now))
        if pool.cfg.max_backend:
            conn.diag = diag_id(sock)
        conn.eligible_at = now + pool.cfg.settle_ms / 1000.0
        pool.settling.append(conn)
        self.next_settle = min(self.next_settle, conn.eligible_at)

    def promote_settled(self, now: float) -> None:
        """Check fresh connections whose settle period is over; pool the quiet ones."""
        for pool in self.tcp_pools:
            settling = pool.settling
            while settling and settling[0].eligible_at <= now:
                conn = settling.popleft()
                if self.is_quiet(conn):
                    if pool.level:
                        self.log("backend_up", pool=pool.name, peer=conn.peer)
                        pool.level = 0
                        pool.last_error = ""
                    self.conn_ready(pool, conn, now)
                    continue
                # The backend killed (or greeted on) a connection before it was ever used: to the
                # caller that is a backend that does not work, so it counts as a failed connect.
                reason = unhealthy_reason(conn.sock)
                pool.stats["discard_fresh"] += 1
                self.note_discard(pool, "fresh_" + reason, conn.peer, now)
                conn.sock.close()
                self.connect_failed(pool, now, f"backend ends new connections before use ({reason})")
            self.refill(pool, now)  # may start connects whose settle periods end later
        self.next_settle = min((p.settling[0].eligible_at for p in self.tcp_pools if p.settling), default=float("inf"))

    def conn_ready(self, pool: Pool, conn: Conn, now: float) -> None:
        if conn.key is not None and pool.plugin is None:
            # The byte counters a release is compared with (nothing moves while it is pooled).
            try:
                conn.traffic = traffic(conn.sock)
            except OSError:
                conn.traffic = (-1, -1)
        pool.idle.append(conn)
        if pool.plugin is not None:
            self.serve_plugin_waiters(pool)
        elif pool.waiters:
            self.serve_waiters(pool, now)

    def connect_failed(self, pool: Pool, now: float, error: str, retry_after: float = 0.0) -> None:
        """A connect (or session open) failed; ``retry_after``: the least wait before the next
        attempt (a refused login waits the pool's login_retry, like PgBouncer's server_login_retry)."""
        pool.stats["connect_failures"] += 1
        pool.last_error = error
        if now >= pool.next_attempt:
            # One backoff step per failed round, however many connects were in flight.
            pool.level += 1
            delay = min(pool.cfg.backoff_max, pool.cfg.backoff_initial * (2 ** (pool.level - 1)))
            delay *= 0.5 + random.random() / 2
            delay = max(delay, retry_after)
            pool.next_attempt = now + delay
            if pool._literal is None:
                pool.addrs_expire = 0.0  # re-resolve: the backend may have moved
            self.log("connect_failed", level="warning", pool=pool.name, error=error, retry_in_s=round(delay, 3))
        if pool.connecting == 0 and not pool.idle and not pool.settling and pool.waiters:
            # Nothing can arrive soon: let waiting callers fall back now instead of at their deadline.
            self.reject_waiters(pool, error)

    def address_failed(self, pool: Pool, index: int, now: float, error: str) -> bool:
        """A connect to address ``index`` failed. While the pool's other addresses are untried, move
        on to the next (no backoff) and return True; after the last, a failed round: False."""
        n = len(pool.addrs)
        if n > 1 and index == pool.addr_index % n and pool.addrs_failed + 1 < n:
            pool.addrs_failed += 1
            pool.addr_index = (index + 1) % n
            pool.stats["address_failures"] += 1
            self.log(
                "address_failed",
                level="warning",
                pool=pool.name,
                address=format_peer(pool.addrs[index][1]),
                error=error,
                next=format_peer(pool.addrs[pool.addr_index][1]),
            )
            return True
        if n > 1 and index != pool.addr_index % n:
            return True  # an older connect to an address already given up: the round goes on
        pool.addrs_failed = 0
        pool.addr_index = 0  # the next round starts again from the first address
        self.connect_failed(pool, now, error)
        return False

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
                    if value != pool.addrs:
                        pool.addr_index = 0
                        pool.addrs_failed = 0
                    pool.addrs, pool.resolved_at = value, now
                    pool.addrs_expire = now + pool.cfg.resolve_ttl
                    self.refill(pool, now)
                elif pool.addrs and now - pool.resolved_at <= pool.cfg.resolve_keep:
                    # A resolver outage is not a backend outage: keep the last good addresses
                    # (for resolve_keep at most) and ask again later.
                    pool.addrs_expire = now + max(pool.cfg.resolve_ttl, 1.0)
                    self.log(
                        "resolve_failed",
                        level="warning",
                        pool=pool.name,
                        error=str(value)[:200],
                        kept=[format_peer(a) for _f, a in pool.addrs],
                        age_s=round(now - pool.resolved_at, 1),
                    )
                    self.refill(pool, now)
                else:
                    pool.addrs = []
                    self.connect_failed(pool, now, f"resolve {pool.cfg.target}: {value}")
            elif kind == "opened":
                pool.connecting -= 1
                if not ok:
                    retry = pool.cfg.login_retry if getattr(value, "login_refused", False) else 0.0
                    self.connect_failed(pool, now, f"{type(value).__name__}: {value}", retry)
                    continue
                sock, meta = value
                try:
                    sock.setblocking(True)
                    peer = format_peer(sock.getpeername())
                    meta_json = json.dumps(meta, separators=(",", ":")).encode()
                except (OSError, TypeError, ValueError) as exc:
                    sock.close()
                    self.connect_failed(pool, now, f"plug-in session unusable: {exc}")
                    continue
                pool.stats["refills"] += 1
                pool.level = 0
                session = Conn(sock, peer, None, meta_json, now, pool.expiry(now))
                session.session = meta
                if pool.cfg.max_backend:
                    session.diag = diag_id(sock)
                self.conn_ready(pool, session, now)
                self.refill(pool, now)
            elif kind == "refreshed":
                # A background proof of life of an idle session, off the hand-out path.
                pool.refreshing -= 1
                conn: Conn = args[1]
                if not (ok and value):
                    pool.stats["discard_health"] += 1
                    self.note_discard(pool, "check_session", conn.peer, now)
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
                    self.note_discard(pool, "check_session", conn.peer, now)
                    self.discard(pool, conn)
                elif pool.waiters:
                    self.hand_out_session(pool, conn, now)
                else:
                    pool.idle.appendleft(conn)
                self.refill(pool, now)
                self.serve_plugin_waiters(pool)
