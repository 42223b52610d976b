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

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 4096
# Replies are small, but stats carries a histogram; cap to keep a broken peer from exhausting memory.
MAX_REPLY_BYTES = 1 << 20

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
# Client-side only: the manager could not be reached at all (no socket file, refused, reset).
MANAGER_UNAVAILABLE = "manager_unavailable"

_FD_SIZE = array.array("i").itemsize
# Room for a few fds so that surplus ones are received (and closed) instead of silently truncated.
_ANC_SPACE = socket.CMSG_SPACE(8 * _FD_SIZE)
_RECV_FLAGS = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


class PoolError(Exception):
    """An error reply from the manager, or a failure to talk to it."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


def encode_request(op: str, **fields: Any) -> bytes:
    """One request line; compact separators keep it well under the size limit."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "op": op}
    body.update(fields)
    line = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_REQUEST_BYTES:
        raise ValueError(f"request is {len(line)} bytes, limit is {MAX_REQUEST_BYTES}")
    return line


def decode_line(line: bytes) -> dict[str, Any]:
    """Parse one JSON object line; raises ValueError on anything else."""
    obj = json.loads(line.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


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


def _fds_from_ancillary(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - (len(data) % _FD_SIZE)
            fds.extend(array.array("i", data[:usable]))
    return fds


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


def _close_fd(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _acquire_line(pool: str) -> bytes:
    # A cold process pays ~30 us for its first json.dumps; for plain names the line is built
    # directly (byte-identical to the compact JSON), so the request follows connect() at once
    # and the manager finds it already there when it accepts.
    if len(pool) < 1024 and pool.isascii() and pool.isprintable() and '"' not in pool and "\\" not in pool:
        return b'{"v":1,"op":"acquire","pool":"' + pool.encode() + b'"}\n'
    return encode_request("acquire", pool=pool)


def acquire(
    socket_path: str, pool: str = "echo", timeout: float = 2.0, handoff: str | None = None
) -> tuple[socket.socket, dict[str, Any]]:
    """Borrow one backend connection. Returns the connected socket (blocking) and the reply.

    ``handoff="relay"`` asks for one end of an AF_UNIX socketpair the manager relays to the
    connection (reply ``meta.handoff == "relay"``) instead of the connection's own fd.
    """
    line = _acquire_line(pool) if handoff is None else encode_request("acquire", pool=pool, handoff=handoff)
    reply, fd = _exchange(socket_path, line, timeout)
    if fd is None:
        raise PoolError("internal", "acquire reply carried no file descriptor")
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        os.close(fd)
        raise PoolError("internal", f"received fd is not a socket: {exc}") from None
    return sock, reply


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
