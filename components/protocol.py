"""Pool protocol v1: the client library and the wire helpers shared with the manager.

Transport is a Unix-domain stream socket. A request is one line of UTF-8 JSON
(at most ``MAX_REQUEST_BYTES`` including the newline); the reply is one JSON line.
A successful ``acquire`` reply carries exactly one file descriptor (SCM_RIGHTS)
on its first byte. A ``release`` request carries the returned connection's fd
on its first byte.

Stdlib only and cheap to import: the function imports it in a cold process.
"""

from __future__ import annotations

import array
import json
import os
import socket
from typing import Any

from components.pool_acquire import (
    ACQUIRE_PHASES,
    FD_DROPPED,
    MANAGER_UNAVAILABLE,
    MAX_REPLY_BYTES,
    MAX_REQUEST_BYTES,
    FdDroppedError,
    PoolError,
    decode_line,
)
from components.pool_acquire import ANC_SPACE as _ANC_SPACE
from components.pool_acquire import RECV_FLAGS as _RECV_FLAGS
from components.pool_acquire import acquire as _lean_acquire
from components.pool_acquire import acquire_line as _plain_acquire_line
from components.pool_acquire import close_fd as _close_fd
from components.pool_acquire import fds_from_ancillary as _fds_from_ancillary
from components.pool_acquire import plain_name as _plain_name

PROTOCOL_VERSION = 1

ERROR_CODES = frozenset(
    {
        "bad_request",
        "unknown_pool",
        "pool_exhausted",
        "backend_unavailable",
        "forbidden",
        "timeout",
        "internal",
    }
)
__all__ = [
    "ACQUIRE_PHASES",
    "ERROR_CODES",
    "FD_DROPPED",
    "MANAGER_UNAVAILABLE",
    "MAX_REPLY_BYTES",
    "MAX_REQUEST_BYTES",
    "PROTOCOL_VERSION",
    "FdDroppedError",
    "PoolError",
    "acquire",
    "decode_line",
    "encode_request",
    "release",
    "report_fd_dropped",
    "request",
]


def encode_request(op: str, **fields: Any) -> bytes:
    """One request line; compact separators keep it well under the size limit."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": op}
    body.update(fields)
    line = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_REQUEST_BYTES:
        raise ValueError(f"request is {len(line)} bytes, limit is {MAX_REQUEST_BYTES}")
    return line


def send_line_with_fd(sock: socket.socket, line: bytes, fd: int | None = None) -> None:
    """Send a whole line; ``fd`` (if any) rides on the first byte."""
    if not line.endswith(b"\n"):
        line += b"\n"
    view = memoryview(line)
    if fd is not None:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
        sent = sock.sendmsg([view], anc)
        view = view[sent:]
    while view:
        sent = sock.send(view)
        view = view[sent:]


def recv_line_with_fd(sock: socket.socket, max_bytes: int = MAX_REPLY_BYTES) -> tuple[bytes, int | None]:
    """Receive one line and at most one fd.

    fds arrive close-on-exec (MSG_CMSG_CLOEXEC). Any fd beyond the first is closed here,
    so a misbehaving peer cannot make us leak descriptors. Raises ConnectionError on EOF
    before a full line and ValueError if the line exceeds ``max_bytes``.
    """
    buf = bytearray()
    fd: int | None = None
    try:
        while True:
            data, ancdata, _flags, _addr = sock.recvmsg(65536, _ANC_SPACE, _RECV_FLAGS)
            for extra in _fds_from_ancillary(ancdata):
                if fd is None:
                    fd = extra
                else:
                    os.close(extra)
            if not data:
                raise ConnectionError("peer closed before a full line")
            buf += data
            nl = buf.find(b"\n")
            if nl >= 0:
                return bytes(buf[: nl + 1]), fd
            if len(buf) > max_bytes:
                raise ValueError(f"line longer than {max_bytes} bytes")
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise


def _connect(socket_path: str, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
    except TimeoutError as exc:
        sock.close()
        raise PoolError("timeout", f"connecting to {socket_path}: {exc}") from None
    except OSError as exc:
        sock.close()
        raise PoolError(MANAGER_UNAVAILABLE, f"{socket_path}: {exc.strerror or exc}") from None
    return sock


def _exchange(
    socket_path: str, line: bytes, timeout: float | None, send_fd: int | None = None
) -> tuple[dict[str, Any], int | None]:
    sock = _connect(socket_path, timeout)
    fd: int | None = None
    try:
        send_line_with_fd(sock, line, send_fd)
        reply_line, fd = recv_line_with_fd(sock)
        reply = decode_line(reply_line)
    except TimeoutError as exc:
        _close_fd(fd)
        raise PoolError("timeout", f"no reply from {socket_path} within {timeout}s") from exc
    except (ConnectionError, BrokenPipeError) as exc:
        _close_fd(fd)
        raise PoolError(MANAGER_UNAVAILABLE, f"{socket_path}: {exc}") from None
    except ValueError as exc:
        _close_fd(fd)
        raise PoolError("internal", f"malformed reply: {exc}") from None
    finally:
        sock.close()
    if reply.get("ok") is not True:
        _close_fd(fd)
        raise PoolError(str(reply.get("error", "internal")), str(reply.get("detail", "")))
    return reply, fd


def _acquire_line(pool: str) -> bytes:
    # A cold process pays ~30 us for its first json.dumps; for plain names the line is built
    # directly (byte-identical to the compact JSON), so the request follows connect() at once
    # and the manager finds it already there when it accepts.
    return _plain_acquire_line(pool) if _plain_name(pool) else encode_request("acquire", pool=pool)


def acquire(
    socket_path: str,
    pool: str = "echo",
    timeout: float | None = 2.0,
    *,
    phases: dict[str, float] | None = None,
    report_dropped: bool = True,
    handoff: str | None = None,
) -> tuple[socket.socket, dict[str, Any]]:
    """Borrow one backend connection. Returns the connected socket (blocking) and the reply.

    ``phases``, if given, receives the duration of each step (ACQUIRE_PHASES, µs). An ok reply
    without its fd raises FdDroppedError; unless ``report_dropped`` is false (the caller then
    reports it itself with ``report_fd_dropped``, e.g. after its timed section), the manager is
    told first, so a lost grant is never silent. ``handoff="relay"`` asks for one end of an
    AF_UNIX socketpair the manager relays to the connection (reply ``meta.handoff == "relay"``)
    instead of the connection's own fd.
    """
    line = _acquire_line(pool) if handoff is None else encode_request("acquire", pool=pool, handoff=handoff)
    try:
        return _lean_acquire(socket_path, pool, timeout, phases=phases, line=line)
    except FdDroppedError as exc:
        if report_dropped:
            report_fd_dropped(socket_path, pool, exc.reply)
        raise


def report_fd_dropped(socket_path: str, pool: str, reply: dict[str, Any], timeout: float = 0.5) -> bool:
    """Tell the manager that a granted connection never arrived. True if it accepted the event.

    A manager that does not know the event answers bad_request; that, or no answer at all, is
    False, never an exception: the caller is already on its way to a fallback.
    """
    fields: dict[str, Any] = {"pool": pool, "event": FD_DROPPED}
    if isinstance(reply.get("id"), int):
        fields["id"] = reply["id"]
    try:
        request(socket_path, "report", timeout=timeout, **fields)
    except (PoolError, OSError, ValueError):
        return False
    return True


def release(socket_path: str, sock: socket.socket, pool: str = "echo", timeout: float = 2.0) -> dict[str, Any]:
    """Hand a connection back. Our copy is closed either way; the reply says whether it was reused."""
    try:
        reply, fd = _exchange(socket_path, encode_request("release", pool=pool), timeout, sock.fileno())
        _close_fd(fd)
        return reply
    finally:
        sock.close()


def request(socket_path: str, op: str, timeout: float = 2.0, **fields: Any) -> dict[str, Any]:
    """Any fd-less op (``stats``, ``ping``, ``report``). Raises PoolError on an error reply."""
    reply, fd = _exchange(socket_path, encode_request(op, **fields), timeout)
    _close_fd(fd)
    return reply


def format_peer(addr: tuple[Any, ...]) -> str:
    """``ip:port`` for IPv4, ``[ip]:port`` for IPv6 — the form used in the acquire reply."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_hostport(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``[V6]:PORT``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    p = int(port)
    if not 0 < p < 65536:
        raise ValueError(f"port out of range in {value!r}")
    return host, p
