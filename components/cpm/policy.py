"""Room: pool policy — take a healthy connection, hand it out, release verdicts, exhaustion, sweep."""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import socket
import time

from components.cpm.backend_cap import diag_id
from components.cpm.core import ManagerCore
from components.cpm.model import (
    DISCARD_LOG_WINDOW,
    EPOLLIN,
    HANDED_MEMORY,
    HANDOUT_PROBES,
    HEALTH_EVENTS,
    LAT_BOUNDS_US,
    PEEK_FLAGS,
    TCP_ESTABLISHED,
    Client,
    Conn,
    Pool,
    close_fds,
    run_check,
    unhealthy_reason,
)
from components.cpm.release_check import baseline, dirty_bytes, restore_state
from components.protocol import format_peer


class PolicyRoom(ManagerCore):
    # ---------------------------------------------------------------- acquire / release
    def acquire(self, client: Client, pool: Pool) -> None:
        now = time.monotonic()
        pool.last_acquire = now
        if pool.plugin is None:
            conn = self.take_healthy(pool, now)
            if conn is not None:
                self.hand_out(client, pool, conn, now)
                self.refill_soon(pool, now)
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
            self.ep.register(client.fd, EPOLLIN)
        self.refill(pool, now)
        if pool.plugin is not None:
            self.serve_plugin_waiters(pool)

    def reject_unavailable(self, client: Client, pool: Pool) -> None:
        if pool.down:
            pool.stats["unavailable"] += 1
            self.reply_error(client, "backend_unavailable", f"pool {pool.name}: {pool.last_error or 'backend down'}")
        else:
            pool.stats["exhausted"] += 1
            detail = f"pool {pool.name} has no idle connection"
            if pool.cfg.max_backend and self.backend_held(pool) >= pool.cfg.max_backend:
                detail = self.cap_detail(pool)
            self.reply_error(client, "pool_exhausted", detail)

    def take_healthy(self, pool: Pool, now: float) -> Conn | None:
        """The first idle connection that is healthy now; at most HANDOUT_PROBES dead ones are
        discarded on the way, the rest is left to a sweep (one acquire never drains the pool)."""
        idle = pool.idle
        dead = 0
        while idle:
            if dead >= HANDOUT_PROBES:
                self.next_sweep = now
                return None
            conn = idle.popleft()
            if conn.expires <= now:
                pool.stats["discard_ttl"] += 1
                conn.sock.close()
                continue
            # Zero-timeout poll: anything readable (data or EOF), a hang-up or an error means the
            # connection is not safe to hand out. (Cheaper than a MSG_PEEK recv raising EAGAIN.)
            poller = self.poller
            poller.register(conn.fd, HEALTH_EVENTS)
            ready = poller.poll(0)
            poller.unregister(conn.fd)
            if not ready:
                return conn
            dead += 1
            pool.stats["discard_health"] += 1
            self.note_discard(pool, unhealthy_reason(conn.sock), conn.peer, now)
            conn.sock.close()
        return None

    def is_quiet(self, conn: Conn) -> bool:
        """Nothing readable (no data, no EOF), no hang-up, no error: safe to hand out."""
        poller = self.poller
        poller.register(conn.fd, HEALTH_EVENTS)
        ready = poller.poll(0)
        poller.unregister(conn.fd)
        return not ready

    def note_discard(self, pool: Pool, reason: str, peer: str, now: float) -> None:
        """Log a discarded connection; in a storm only the first of each window, then one summary."""
        if now >= pool.discard_log_until:
            self.flush_discards(pool)
            pool.discard_log_until = now + DISCARD_LOG_WINDOW
            self.log("discard", pool=pool.name, reason=reason, peer=peer)
        else:
            pool.discards_unlogged[reason] = pool.discards_unlogged.get(reason, 0) + 1

    def flush_discards(self, pool: Pool) -> None:
        if pool.discards_unlogged:
            counts, pool.discards_unlogged = pool.discards_unlogged, {}
            self.log("discards", level="warning", pool=pool.name, counts=counts, window_s=DISCARD_LOG_WINDOW)

    def hand_out(self, client: Client, pool: Pool, conn: Conn, now: float) -> bool:
        self.next_id += 1
        hid = self.next_id
        # Time in the manager up to the reply (measured before sending: the woken caller may preempt us).
        self.lat_counts[bisect.bisect_left(LAT_BOUNDS_US, (now - client.t0) * 1e6)] += 1
        reply = b'%s%s","id":%d%s' % (pool.reply_head, conn.peer.encode(), hid, conn.reply_tail)
        # Every hand-out goes through the pool's hand-off strategy (fd passing unless replaced).
        if not (client.handoff or pool.handoff).deliver(client, conn, reply):
            # Not transferred: the connection is still only ours and still unused.
            pool.stats["send_failures"] += 1
            pool.idle.appendleft(conn)
            self.close_client(client)
            return False
        pool.stats["handed_out"] += 1
        if pool.cfg.max_backend:
            self.note_handed_out(pool, conn)
        if pool.cfg.accept_release and conn.key is not None:
            handed = pool.handed
            handed[conn.key] = (conn.created, conn.traffic)
            if len(handed) > HANDED_MEMORY:
                handed.popitem(last=False)
        if self.log_grants:
            self.logbuf.append(
                f'{{"ts":{time.time():.6f},"level":"info","event":"grant","pool":{pool.jname},"id":{hid},'
                f'"pid":{client.pid},"uid":{client.uid},"gid":{client.gid},"peer":"{conn.peer}"}}'
            )
        self.close_client(client)
        return True

    def release(self, client: Client, pool: Pool, fds: list[int]) -> None:
        if len(fds) != 1:
            close_fds(fds)
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
        reason, reset = self.release_verdict(pool, sock)
        if reason:
            sock.close()
            pool.stats["discard_release"] += 1
            self.log("release_discarded", pool=pool.name, reason=reason, pid=client.pid, uid=client.uid)
            body = {"ok": True, "op": "release", "pool": pool.name, "reused": False, "reason": reason}
            self.reply(client, (json.dumps(body, separators=(",", ":")) + "\n").encode())
            return
        peer = format_peer(sock.getpeername())
        key = self.release_key(sock, peer)
        created, _traffic = pool.handed.pop(key)
        conn = Conn(sock, peer, key, b"{}", now, float("inf"))
        conn.created = created
        if pool.cfg.max_backend:
            conn.diag = diag_id(sock)
            if conn.diag is not None:
                pool.out.pop(conn.diag[3], None)  # back inside the pool: counted there now
        conn.expires = pool.expiry(created) if pool.cfg.ttl > 0 else float("inf")
        pool.stats["released_reused"] += 1
        if reset:
            # The caller changed socket state; it was put back. Say what, to the caller and the log.
            pool.stats["release_reset"] += 1
            self.log("release_reset", pool=pool.name, reset=reset, pid=client.pid, uid=client.uid)
            body = {"ok": True, "op": "release", "pool": pool.name, "reused": True, "reset": reset}
            self.reply(client, (json.dumps(body, separators=(",", ":")) + "\n").encode())
        else:
            self.reply(client, b'{"ok":true,"op":"release","pool":%s,"reused":true}\n' % pool.jname.encode())
        self.conn_ready(pool, conn, now)

    def release_verdict(self, pool: Pool, sock: socket.socket) -> tuple[str, list[str]]:
        """("", what was reset) if a handed-back connection is clean and may be pooled again,
        else (why not, ...). Clean: this pool's own connection, established, nothing queued either
        way, no request still being answered, every option and flag back at the pool's settings."""
        reason = self._release_refusal(pool, sock)
        if reason:
            return reason, []
        want = pool.release_baseline.get(sock.family)
        if want is None:
            want = pool.release_baseline[sock.family] = baseline(sock.family, pool.cfg)
        try:
            reset, reason = restore_state(sock, want)
        except OSError as exc:
            return f"socket_error: {exc.strerror or exc}", []
        return reason, reset

    def _release_refusal(self, pool: Pool, sock: socket.socket) -> str:
        # Plug-in kinds (postgres, tls) cannot prove a session clean from outside its protocol
        # state (a transaction, a TLS record half sent): release is refused for them.
        if not pool.cfg.accept_release or pool.plugin is not None:
            return "release_disabled"
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return "not_tcp"
        try:
            peer = format_peer(sock.getpeername())
            key = self.release_key(sock, peer)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        except OSError:
            return "not_connected"
        if key is None or key not in pool.handed:
            # Only connections this pool handed out come back: no foreign sockets get injected.
            return "unknown_connection"
        if err:
            return "socket_error"
        if state != TCP_ESTABLISHED:
            return "half_closed"
        try:
            data = sock.recv(1, PEEK_FLAGS)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            return "socket_error"
        if data == b"":
            return "eof"
        if data:
            return "unread_data"
        try:
            dirty = dirty_bytes(sock, pool.handed[key][1])
        except OSError:
            return "socket_error"
        if dirty:
            return dirty
        if len(pool.idle) + len(pool.settling) + pool.connecting >= 2 * pool.cfg.size:
            return "pool_full"
        return ""

    def discard(self, pool: Pool, conn: Conn) -> None:
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

    def hand_out_session(self, pool: Pool, conn: Conn, now: float) -> None:
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
            # Last word before hand-out, for kinds whose idle sessions legitimately receive bytes
            # (e.g. TLS session tickets): consume them, and say what the caller must know in meta.
            try:
                strategy = pool.waiters[0].handoff or pool.handoff if pool.waiters else pool.handoff
                if strategy.name == "relay" and hasattr(pool.plugin, "relay_codec"):
                    meta = prepare(conn.sock, conn.session, relay=True)  # no secrets: the manager relays
                else:
                    meta = prepare(conn.sock, conn.session)
                if meta is not None:
                    conn.reply_tail = b',"meta":' + json.dumps(meta, separators=(",", ":")).encode() + b"}\n"
            except Exception as exc:
                pool.stats["discard_health"] += 1
                self.log("discard", pool=pool.name, reason="prepare_handout", error=f"{type(exc).__name__}: {exc}")
                self.discard(pool, conn)
                self.refill(pool, now)
                self.serve_plugin_waiters(pool)
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
                self.note_discard(pool, "quick_check", conn.peer, now)
                self.discard(pool, conn)
                self.refill(pool, now)
                continue
            if verdict is True:
                self.hand_out_session(pool, conn, now)
                continue
            pool.checking += 1
            self.submit("checked", pool, run_check, pool.plugin, conn)

    def serve_waiters(self, pool: Pool, now: float) -> None:
        """Give idle connections to waiting callers, or tell them the backend is down."""
        while pool.waiters:
            conn = self.take_healthy(pool, now)
            if conn is None:
                break
            client = pool.waiters.popleft()
            client.pool = None
            self.hand_out(client, pool, conn, now)  # on failure the connection goes back to idle
        if pool.waiters and pool.down and not pool.idle and not pool.settling and pool.connecting == 0:
            self.reject_waiters(pool, pool.last_error or "backend down")

    def reject_waiters(self, pool: Pool, error: str) -> None:
        while pool.waiters:
            client = pool.waiters.popleft()
            client.pool = None
            pool.stats["unavailable"] += 1
            self.reply_error(client, "backend_unavailable", f"pool {pool.name}: {error}")

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
                        self.submit("refreshed", pool, run_check, pool.plugin, conn)
                        continue
                else:
                    try:
                        peek = conn.sock.recv(1, PEEK_FLAGS)
                        reason = "health"
                        self.note_discard(pool, "eof" if not peek else "unread_data", conn.peer, now)
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        reason = "health"
                        self.note_discard(pool, "error", conn.peer, now)
                if reason:
                    pool.stats["discard_" + reason] += 1
                    self.discard(pool, conn)
                    remaining -= 1
                else:
                    idle.append(conn)
            if now >= pool.discard_log_until:
                self.flush_discards(pool)
            self.refill(pool, now)

    @staticmethod
    def _needs_refresh(pool: Pool, conn: Conn) -> bool:
        quick = getattr(pool.plugin, "quick_check", None)
        if quick is None:
            return False
        try:
            return quick(conn.sock) is None
        except Exception:
            return True
