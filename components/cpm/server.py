"""Room: the event loop and the client protocol (accept, read, parse, dispatch, timers, shutdown)."""

from __future__ import annotations

import _socket
import contextlib
import errno
import json
import os
import socket
import sys
import time
from typing import Any

from components.cpm.core import ACCEPT_BACKOFF_MIN
from components.cpm.guard import GuardRoom
from components.cpm.model import (
    AF_UNIX,
    ANC_SPACE,
    EPOLLIN,
    MAX_PENDING_FDS,
    RECV_FLAGS,
    SOCK_STREAM,
    TICK,
    Client,
    close_fds,
    fds_of,
)
from components.pool_config import DENIED_SLOTS, MAX_PARKED_FDS
from components.protocol import MAX_REQUEST_BYTES, PROTOCOL_VERSION


class ServerRoom(GuardRoom):
    # ---------------------------------------------------------------- main loop
    def run(self) -> None:
        ep_poll = self.ep.poll
        lfd = self.listener.fileno() if self.listener else -1
        evfd = self.evfd
        clients = self.clients
        connecting = self.connecting
        chan_fd = self.connector_chan.fileno() if self.connector_chan is not None else -2
        next_tick = time.monotonic()
        self.next_sweep = next_tick + self.cfg.health_interval
        for pool in self.pools.values():
            self.refill(pool, next_tick)
        while not self.stopping:
            if self.demand_pending:
                self.flush_demand()
            timeout = TICK
            due = min(self.next_settle, self.next_refill)
            if due != float("inf"):
                timeout = min(TICK, max(0.0, due - time.monotonic()))
            events = ep_poll(timeout, 1024)
            for fd, ev in events:
                if fd == lfd:
                    self.accept()
                elif fd in clients:
                    client = clients[fd]
                    if client.out:
                        self.client_writable(client)
                    else:
                        self.client_readable(client)
                elif fd == chan_fd:
                    self.connector_readable()
                    if self.connector_chan is None:
                        chan_fd = -2
                elif fd in connecting:
                    self.connect_done(fd, ev)
                elif fd == evfd:
                    self.drain_results()
                elif fd == self.relay_hub_fd:
                    self.relay_poll()
            now = time.monotonic()
            if now >= self.next_settle:
                self.promote_settled(now)
            if now >= self.next_refill:
                self.refill_deferred(now)
            if now >= next_tick:
                next_tick = now + TICK
                self.tick(now)
                if now >= self.next_sweep:
                    self.next_sweep = now + self.cfg.health_interval
                    self.sweep(now)
            if self.signals_pending:
                self.handle_signals()
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
            self.log_writer.drain(1.0)
            try:
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()
            except (OSError, ValueError) as exc:
                # Nobody reads the ready line (stdout closed): serving matters more than announcing.
                self.log("stdout_closed", level="warning", error=str(exc))
                with contextlib.suppress(OSError, ValueError):
                    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the dead stream for good

    # ---------------------------------------------------------------- callers
    def accept(self) -> None:
        listener = self.listener
        assert listener is not None
        now = time.monotonic()
        deadline = now + self.cfg.request_timeout
        clients = self.clients
        allow_uids, allow_gids = self.cfg.allow_uids, self.cfg.allow_gids
        for _ in range(256):
            if self.allowed_clients >= self.cfg.max_clients:
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
                    self.pause_accepting(exc)
                    return
                continue
            self.accept_backoff = ACCEPT_BACKOFF_MIN
            client = Client(_socket.socket(AF_UNIX, SOCK_STREAM, 0, fd), time.monotonic(), deadline)
            # Credentials are known now (SO_PEERCRED): denied callers never take an allowed caller's
            # place. A few are kept until they send their line (so they read a clean error); the
            # rest get the error line at once.
            client.allowed = (
                client.uid in allow_uids
                or client.gid in allow_gids
                or (bool(allow_gids) and not allow_gids.isdisjoint(self.peer_groups(client)))
            )
            clients[client.fd] = client
            if client.allowed:
                self.allowed_clients += 1
            else:
                self.denied_clients += 1
                if self.denied_clients > DENIED_SLOTS:
                    self.deny(client)
                    continue
            # Callers usually send right after connecting: try before paying for an epoll round.
            self.client_readable(client)
            if client.allowed and client.fd in clients and client.pool is None and not client.out:
                self.count_pending(client)

    def client_readable(self, client: Client) -> None:
        """Read and serve a caller's request; whatever goes wrong, the caller gets an error line
        and the manager goes on."""
        try:
            self.read_request(client)
        except Exception as exc:
            self.request_failed(client, exc)

    def request_failed(self, client: Client, exc: Exception) -> None:
        self.log("request_failed", level="error", error=f"{type(exc).__name__}: {exc}"[:300])
        try:
            if client.fd in self.clients:
                self.reply_error(client, "internal", f"request could not be handled ({type(exc).__name__})")
        except Exception:
            self.close_client(client)

    def read_request(self, client: Client) -> None:
        if client.pool is not None:
            self.waiter_readable(client)
            return
        try:
            data, anc, _flags, _addr = client.sock.recvmsg(MAX_REQUEST_BYTES + 1, ANC_SPACE, RECV_FLAGS)
        except (BlockingIOError, InterruptedError):
            if not client.registered:
                client.registered = True
                self.ep.register(client.fd, EPOLLIN)
            return
        except OSError:
            self.close_client(client)
            return
        if not anc and client.allowed and not client.buf:
            pool = self._fast_acquire.get(data)
            if pool is not None:
                # The common case, a complete plain acquire from an allowed caller: straight to hand-out.
                self.requests += 1
                self.unpend(client)
                self.acquire(client, pool)
                return
        fds = fds_of(anc) if anc else []
        if not data:
            close_fds(fds)
            self.close_client(client)
            return
        buf = client.buf + data if client.buf else data
        nl = buf.find(b"\n")
        if nl < 0:
            # Fds ride on the first byte of a request, which may arrive before the rest of its line.
            client.fds.extend(fds)
            self.parked_fds += len(fds)
            if len(client.fds) > MAX_PENDING_FDS:
                self.reply_error(client, "bad_request", f"more than {MAX_PENDING_FDS} fds attached to one request")
                return
            if fds and self.parked_fds > MAX_PARKED_FDS:
                # Counted in the fd budget: parked descriptors never push the manager into EMFILE.
                self.reply_error(client, "busy", f"more than {MAX_PARKED_FDS} fds wait on unfinished requests")
                return
            if len(buf) >= MAX_REQUEST_BYTES:
                self.reply_error(client, "bad_request", f"request line longer than {MAX_REQUEST_BYTES} bytes")
                return
            client.buf = buf
            if not client.registered:
                client.registered = True
                self.ep.register(client.fd, EPOLLIN)
            return
        if client.fds:
            self.parked_fds -= len(client.fds)
            fds, client.fds = client.fds + fds, []
        if nl + 1 > MAX_REQUEST_BYTES:
            close_fds(fds)
            self.reply_error(client, "bad_request", f"request line longer than {MAX_REQUEST_BYTES} bytes")
            return
        self.handle_request(client, buf[: nl + 1], fds)

    def waiter_readable(self, client: Client) -> None:
        """A waiting caller stirred. A half-close (shutdown(SHUT_WR), EOF on our side) still wants
        its reply: from now on only a full hang-up is watched. Anything else ends its wait."""
        if client.half_closed:
            # Registered for hang-up only: both directions are gone, nobody reads a reply.
            self.close_client(client)
            return
        try:
            data = client.sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close_client(client)
            return
        if data:
            # More bytes after a complete request: not a caller of this protocol; its wait is over.
            self.close_client(client)
            return
        client.half_closed = True
        self.ep.modify(client.fd, 0)  # EPOLLHUP and EPOLLERR are always reported

    def handle_request(self, client: Client, line: bytes, fds: list[int]) -> None:
        self.requests += 1
        self.unpend(client)
        if not client.allowed:
            # Checked before parsing: a denied caller learns nothing about pools or ops.
            close_fds(fds)
            self.deny(client)
            return
        fast = self._fast_requests.get(line)
        if fast is not None:
            op, pool = fast
            req: dict[str, Any] = {}
        else:
            try:
                obj = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                close_fds(fds)
                self.reply_error(client, "bad_request", "request is not a JSON line")
                return
            except RecursionError:
                close_fds(fds)
                self.reply_error(client, "bad_request", "request nests too deeply")
                return
            if not isinstance(obj, dict):
                close_fds(fds)
                self.reply_error(client, "bad_request", "request must be a JSON object")
                return
            req = obj
            version = req.get("v", PROTOCOL_VERSION)
            # Exactly the integer 1: JSON true and 1.0 compare equal to 1 in Python, but are not versions.
            if type(version) is not int or version != PROTOCOL_VERSION:
                close_fds(fds)
                self.reply_error(client, "bad_request", f"unsupported protocol version {req.get('v')!r}")
                return
            raw_op = req.get("op")
            name = req.get("pool", self.cfg.default_pool)
            if not isinstance(raw_op, str) or not isinstance(name, str):
                close_fds(fds)
                self.reply_error(client, "bad_request", "'op' and 'pool' must be strings")
                return
            op = raw_op
            found = self.pools.get(name)
            if op in ("acquire", "release", "report") and found is None:
                close_fds(fds)
                self.reply_error(client, "unknown_pool", f"no pool named {name!r}")
                return
            pool = found or self.pools[self.cfg.default_pool]
        if op == "acquire":
            close_fds(fds)
            if "handoff" in req:
                client.handoff = self.handoff_for(pool, req["handoff"])
                if client.handoff is None:
                    detail = f"handoff must be 'inject' or 'relay', got {req['handoff']!r}"
                    self.reply_error(client, "bad_request", detail)
                    return
            if (client.handoff or pool.handoff).name == "relay" and not self.relay_available():
                pool.stats["relay_refused"] += 1
                self.reply_error(client, "pool_exhausted", f"relay limit of {self.cfg.max_relays} reached")
                return
            self.acquire(client, pool)
        elif op == "release":
            self.release(client, pool, fds)
        elif op == "ping":
            close_fds(fds)
            self.reply(client, b'{"ok":true,"op":"ping","v":1}\n')
        elif op == "stats":
            close_fds(fds)
            self.reply(client, (json.dumps(self.stats_obj(), separators=(",", ":")) + "\n").encode())
        elif op == "report":
            close_fds(fds)
            event = req.get("event")
            if event == "fallback":
                pool.stats["fallbacks_seen"] += 1
                self.log("fallback_reported", pool=pool.name, pid=client.pid, reason=str(req.get("reason", ""))[:200])
                self.reply(client, b'{"ok":true,"op":"report"}\n')
            elif event == "fd_dropped":
                # The caller got an acquire reply without its fd (e.g. a sandbox that imports no TCP fds).
                pool.stats["fd_dropped"] += 1
                self.log("fd_dropped_reported", level="warning", pool=pool.name, pid=client.pid, uid=client.uid)
                self.reply(client, b'{"ok":true,"op":"report"}\n')
            else:
                self.reply_error(client, "bad_request", f"unknown report event {event!r}")
        else:
            close_fds(fds)
            self.reply_error(client, "bad_request", f"unknown op {op!r}")

    # ---------------------------------------------------------------- timers
    def tick(self, now: float) -> None:
        for client in [c for c in self.clients.values() if c.deadline <= now]:
            pool = client.pool
            if client.out:
                self.close_client(client)  # a reply nobody reads within its time
            elif pool is None:
                self.reply_error(client, "timeout", f"no complete request within {self.cfg.request_timeout}s")
            else:
                pool.stats["borrow_timeouts"] += 1
                self.reject_unavailable(client, pool)
        if self.connecting:
            self.expire_connects(now)
        if self.accept_paused_until and now >= self.accept_paused_until:
            self.resume_accepting()
        if self.denials_unlogged and now >= self.denial_window_until:
            self.flush_denials()
        for pool in self.pools.values():
            if pool.plugin is None and pool.waiters:
                self.serve_waiters(pool, now)
            self.refill(pool, now)
        self.relay_tick(now)

    def close(self) -> None:
        if self.stopping:
            self.drain_for_shutdown()
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
            for conn in pool.settling:
                conn.sock.close()
            pool.settling.clear()
        self.relay_shutdown()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.cfg.socket)
        self.ep.close()
        os.close(self.evfd)
        self.flush_log()
        self.log_writer.close(2.0)
