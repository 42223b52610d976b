"""Room: the per-pool cap on backend connections (``max_backend``), handed-out ones included.

A handed-out connection lives in its caller; the manager closed its copy. Whether it is still
open is asked of the kernel: sock_diag (NETLINK_SOCK_DIAG) looks a TCP socket up by its address
pair and socket cookie, so a closed connection whose pair was reused is not mistaken for it.
Handed-out connections are checked only when the pool is at its cap, at most every
``RECHECK_S``, in batches of ``BATCH`` requests per netlink message.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from components.cpm.core import ManagerCore
from components.cpm.model import Conn, Pool, socket_cookie

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
TCP_ESTABLISHED = 1
RECHECK_S = 0.1
BATCH = 128
_NLMSG = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states; inet_diag_sockid: ports (big-endian),
# addresses (16 bytes each), interface, cookie as two 32-bit halves.
_REQ = struct.Struct("=BBBBI")
_SOCKID = struct.Struct("!HH16s16s")
_SOCKID_TAIL = struct.Struct("=III")
REQ_LEN = _NLMSG.size + _REQ.size + _SOCKID.size + _SOCKID_TAIL.size

# What identifies a live connection to the kernel: family, local (host, port), peer (host, port), cookie.
DiagId = tuple[int, tuple[Any, ...], tuple[Any, ...], int]


def diag_id(sock: Any) -> DiagId | None:
    cookie = socket_cookie(sock)
    if cookie is None:
        return None
    try:
        return (int(sock.family), sock.getsockname()[:2], sock.getpeername()[:2], cookie)
    except OSError:
        return None


def _request(seq: int, ident: DiagId) -> bytes:
    family, local, peer, cookie = ident
    src = socket.inet_pton(family, local[0]).ljust(16, b"\0")
    dst = socket.inet_pton(family, peer[0]).ljust(16, b"\0")
    return (
        _NLMSG.pack(REQ_LEN, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, 0)
        + _REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        + _SOCKID.pack(local[1], peer[1], src, dst)
        + _SOCKID_TAIL.pack(0, cookie & 0xFFFFFFFF, cookie >> 32)
    )


def established(idents: list[DiagId]) -> list[bool] | None:
    """For each connection, whether it is still an established socket; None if the kernel cannot say."""
    out = [False] * len(idents)
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except OSError:
        return None
    with nl:
        nl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for start in range(0, len(idents), BATCH):
            part = idents[start : start + BATCH]
            try:
                nl.send(b"".join(_request(start + i, ident) for i, ident in enumerate(part)))
            except OSError:
                return None
            answered = 0
            while answered < len(part):
                try:
                    data = nl.recv(1 << 20, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break  # every reply is queued during send(): nothing more will come
                except OSError:
                    return None
                offset = 0
                while offset + _NLMSG.size <= len(data):
                    length, kind, _flags, seq, _pid = _NLMSG.unpack_from(data, offset)
                    if length < _NLMSG.size:
                        break
                    if kind == SOCK_DIAG_BY_FAMILY and 0 <= seq < len(idents):
                        out[seq] = data[offset + _NLMSG.size + 1] == TCP_ESTABLISHED
                    elif kind == NLMSG_ERROR:
                        errno_ = -struct.unpack_from("=i", data, offset + _NLMSG.size)[0]
                        if errno_ not in (0, 2):  # ENOENT: no such socket (any more)
                            return None
                    answered += 1
                    offset += (length + 3) & ~3
    return out


class BackendCapRoom(ManagerCore):
    def backend_room(self, pool: Pool, now: float) -> int:
        """How many more backend connections the pool may open now (a large number without a cap)."""
        cap = pool.cfg.max_backend
        if cap <= 0:
            return 1 << 30
        held = self.backend_held(pool)
        if held >= cap and pool.out and now >= pool.out_checked + RECHECK_S:
            self.prune_handed_out(pool, now)
            held = self.backend_held(pool)
        return cap - held

    @staticmethod
    def backend_held(pool: Pool) -> int:
        inside = len(pool.idle) + len(pool.settling) + pool.connecting + pool.checking + pool.refreshing
        return inside + len(pool.out)

    def prune_handed_out(self, pool: Pool, now: float) -> None:
        """Forget handed-out connections that are closed (or no longer established)."""
        pool.out_checked = now
        idents = list(pool.out.values())
        alive = established(idents)
        if alive is None:
            # Without sock_diag the manager cannot see them: count only what it holds itself.
            if not pool.out_unverifiable:
                pool.out_unverifiable = True
                self.log("backend_cap_unverifiable", level="warning", pool=pool.name)
            pool.out.clear()
            return
        for ident, live in zip(idents, alive, strict=True):
            if not live:
                pool.out.pop(ident[3], None)

    def note_handed_out(self, pool: Pool, conn: Conn) -> None:
        if conn.diag is not None:
            pool.out[conn.diag[3]] = conn.diag

    def cap_detail(self, pool: Pool) -> str:
        return f"pool {pool.name} is at its cap of {pool.cfg.max_backend} backend connections (max_backend)"
