"""Room: relay hand-off — the caller gets one end of an AF_UNIX socketpair, the manager relays.

For runtimes that import only AF_UNIX fds from a host socket (gVisor drops a TCP fd without an
error), the grant carries a socketpair end instead of the pooled connection, with
``meta.handoff = "relay"``; the other end and the pooled connection go to an embedded
``components.relay.RelayHub`` whose epoll fd sits in the manager's own epoll set, so the relay
work runs on the manager's thread (its CPU is the hub's ``cpu_s``).

Chosen per pool (``"handoff": "relay"``) or per acquire (a request field ``"handoff"``, which wins).
A relayed connection is single-use: it is not remembered for ``release``. Limits: ``max_relays``
live at once (``pool_exhausted`` beyond), ``relay_idle_timeout`` without a byte ends a relay.
See docs/relay-handoff.md.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from typing import Any

from components.cpm.core import ManagerCore
from components.cpm.handoff import FD_PASSING, Handoff
from components.cpm.model import EPOLLIN, SEND_FLAGS, Client, Conn, Pool
from components.relay import CLOSED, HubStats, RelayHub, RelayResult, splice_available

RELAY = "relay"
_EMPTY_META_END = b'"meta":{}}\n'
RELAY_CHECK_INTERVAL = 1.0  # seconds between idle-relay sweeps


def with_relay_meta(reply: bytes) -> bytes:
    """The grant line with ``"handoff":"relay"`` added to its meta object (the last member)."""
    if reply.endswith(_EMPTY_META_END):
        return reply[:-3] + b'"handoff":"relay"}}\n'
    return reply[:-3] + b',"handoff":"relay"}}\n'


class RelayHandoff:
    """The relay strategy (``components.cpm.handoff.Handoff``): owns ``conn`` after a True delivery."""

    name = RELAY

    def __init__(self, room: RelayRoom, pool: Pool) -> None:
        self.room = room
        self.pool = pool

    def deliver(self, client: Client, conn: Conn, reply: bytes) -> bool:
        room, pool = self.room, self.pool
        hub = room.relay_hub_for_use()
        if hub is None or hub.active >= room.cfg.max_relays:
            # Lost a race with other relays since the acquire was accepted: refuse, keep conn unused.
            pool.stats["relay_refused"] += 1
            room.reply_error(client, "pool_exhausted", f"relay limit of {room.cfg.max_relays} reached")
            return False
        codec = None
        make_codec = getattr(pool.plugin, "relay_codec", None) if pool.plugin is not None else None
        if make_codec is not None:
            # A kind whose sessions speak a protocol the manager terminates (TLS): the relay seals
            # and opens its records, the caller's end carries plaintext, the keys stay here.
            try:
                codec = make_codec(conn.sock)
            except Exception as exc:
                room.log("relay_codec_failed", level="warning", pool=pool.name, error=f"{type(exc).__name__}: {exc}")
                return False
        try:
            fn_end, mgr_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        except OSError:
            return False
        line = with_relay_meta(reply)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fn_end.fileno()))]
        try:
            sent = client.sock.sendmsg([line], anc, SEND_FLAGS)
        except OSError:
            fn_end.close()
            mgr_end.close()
            return False
        fn_end.close()  # the caller holds it now
        if sent < len(line):
            with contextlib.suppress(OSError):
                client.sock.settimeout(0.2)
                client.sock.sendall(line[sent:])
        conn.key = None  # single-use: never accepted back by release
        pool.stats["relayed"] += 1
        hub.add(mgr_end, conn.sock, on_close=room.relay_closed, codec=codec)  # type: ignore[arg-type]
        return True


class RelayRoom(ManagerCore):
    def init_relays(self) -> None:
        """Give pools configured with ``handoff: relay`` the relay strategy (the hub is made on first use)."""
        self.relay_handoffs = {name: RelayHandoff(self, pool) for name, pool in self.pools.items()}
        for name, pool in self.pools.items():
            handoff = pool.cfg.handoff
            resolve = getattr(pool.plugin, "resolve_handoff", None) if pool.plugin is not None else None
            if resolve is not None:
                # A kind with its own hand-off paths (tls: ktls | record | relay | auto) says which
                # one a plain acquire takes; a bad setting fails the start, as config errors do.
                handoff = resolve(pool.cfg.as_dict())
                self.log("handoff", pool=name, configured=pool.cfg.handoff, path=handoff)
            pool.handoff = self.relay_handoffs[name] if handoff == RELAY else FD_PASSING
        self.next_relay_check = time.monotonic() + RELAY_CHECK_INTERVAL

    def handoff_for(self, pool: Pool, name: Any) -> Handoff | None:
        """The strategy an acquire's ``handoff`` field asks for; None for a value that is not one."""
        if name == RELAY:
            return self.relay_handoffs[pool.name]
        if name == "inject":
            return FD_PASSING
        return None

    def relay_available(self) -> bool:
        hub = self.relay_hub
        return self.cfg.max_relays > 0 and (hub is None or hub.active < self.cfg.max_relays)

    def relay_hub_for_use(self) -> RelayHub | None:
        if self.relay_hub is None and self.cfg.max_relays > 0:
            hub = RelayHub(buffer_bytes=self.cfg.relay_buffer_bytes)
            self.relay_hub = hub
            self.relay_hub_fd = hub.fileno()
            self.ep.register(self.relay_hub_fd, EPOLLIN)
        return self.relay_hub

    def relay_closed(self, result: RelayResult) -> None:
        if self.log_grants or result.outcome != CLOSED:
            self.log(
                "relay_end",
                level="info" if result.outcome == CLOSED else "warning",
                relay=result.relay_id,
                outcome=result.outcome,
                to_backend=result.bytes_a_to_b,
                to_caller=result.bytes_b_to_a,
                duration_s=round(result.duration_s, 6),
                detail=result.detail,
            )

    def relay_poll(self) -> None:
        if self.relay_hub is not None:
            self.relay_hub.poll(0)

    def relay_tick(self, now: float) -> None:
        if self.relay_hub is not None and now >= self.next_relay_check:
            self.next_relay_check = now + RELAY_CHECK_INTERVAL
            self.relay_hub.expire_idle(self.cfg.relay_idle_timeout, now)

    def relay_stats(self) -> dict[str, Any]:
        hub = self.relay_hub
        base = (hub.stats if hub is not None else HubStats(zero_copy=splice_available())).as_dict()
        base["max_relays"] = self.cfg.max_relays
        return base

    def relay_shutdown(self) -> None:
        """End every relay (outcome ``stopped``; TCP peers get a reset) and release the hub."""
        hub, self.relay_hub = self.relay_hub, None
        if hub is not None:
            with contextlib.suppress(OSError, ValueError):
                self.ep.unregister(self.relay_hub_fd)
            self.relay_hub_fd = -3
            hub.close()
