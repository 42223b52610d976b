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
import select
import socket
import time
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
# Client-side only: the manager granted a connection but its fd did not arrive (a sandbox such
# as gVisor imports only AF_UNIX fds from host sockets). Reported back with a ``report`` op.
FD_DROPPED = "fd_dropped"
# Phases of an acquire, in the order they happen (µs); their sum is the acquire minus call overhead.
ACQUIRE_PHASES = ("uds_connect_us", "request_write_us", "reply_recv_us", "reply_parse_us", "sock_wrap_us")

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


class FdDroppedError(PoolError):
    """An ok acquire reply that arrived without its file descriptor; ``reply`` is what did arrive."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(FD_DROPPED)
        self.reply = reply


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


def _acquire_exchange(
    socket_path: str, line: bytes, timeout: float | None, phases: dict[str, float] | None
) -> tuple[dict[str, Any], int | None]:
    """The acquire round trip on a non-blocking socket, timed per phase.

    Non-blocking from creation (SOCK_NONBLOCK: no ioctl) and one poll() only where we really
    wait, for the reply: with ``settimeout`` every call would poll first (one syscall more per
    step). A Unix connect() does not wait (it succeeds or fails at once) and a request of at most
    MAX_REQUEST_BYTES fits an empty socket buffer, so only the reply needs the timeout.
    """
    clock = time.perf_counter_ns
    t0 = clock()
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    except OSError as exc:
        raise PoolError(MANAGER_UNAVAILABLE, f"{socket_path}: {exc.strerror or exc}") from None
    fd: int | None = None
    try:
        try:
            sock.connect(socket_path)
        except BlockingIOError:
            # A full listen backlog: a blocking connect would fail the same way (EAGAIN).
            raise PoolError(MANAGER_UNAVAILABLE, f"{socket_path}: listen backlog full") from None
        except OSError as exc:
            raise PoolError(MANAGER_UNAVAILABLE, f"{socket_path}: {exc.strerror or exc}") from None
        t1 = clock()
        deadline = None if timeout is None else t1 + int(timeout * 1e9)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLOUT)
        try:
            view = memoryview(line)
            while view:
                try:
                    view = view[sock.send(view) :]
                except BlockingIOError:
                    _wait(poller, sock, select.POLLOUT, deadline, socket_path, timeout)
            t2 = clock()
            buf = bytearray()
            while True:
                # Wait first: the manager has rarely answered yet, and a recvmsg() that finds
                # nothing would cost a syscall for an EAGAIN.
                _wait(poller, sock, select.POLLIN, deadline, socket_path, timeout)
                try:
                    data, ancdata, _flags, _addr = sock.recvmsg(65536, _ANC_SPACE, _RECV_FLAGS)
                except BlockingIOError:
                    continue
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
                    break
                if len(buf) > MAX_REPLY_BYTES:
                    raise ValueError(f"line longer than {MAX_REPLY_BYTES} bytes")
            t3 = clock()
            reply = decode_line(bytes(buf[: nl + 1]))
            t4 = clock()
        except (ConnectionError, BrokenPipeError) as exc:
            raise PoolError(MANAGER_UNAVAILABLE, f"{socket_path}: {exc}") from None
        except ValueError as exc:
            raise PoolError("internal", f"malformed reply: {exc}") from None
        except OSError as exc:
            raise PoolError(MANAGER_UNAVAILABLE, f"{socket_path}: {exc.strerror or exc}") from None
    except BaseException:
        _close_fd(fd)
        raise
    finally:
        sock.close()
    if phases is not None:
        phases["uds_connect_us"] = (t1 - t0) / 1000
        phases["request_write_us"] = (t2 - t1) / 1000
        phases["reply_recv_us"] = (t3 - t2) / 1000
        phases["reply_parse_us"] = (t4 - t3) / 1000
    return reply, fd


def _wait(
    poller: Any, sock: socket.socket, events: int, deadline: int | None, socket_path: str, timeout: float | None
) -> None:
    """Wait for ``events`` until the deadline (None: no limit); raises PoolError("timeout") when it passes."""
    poller.modify(sock.fileno(), events)
    if deadline is None:
        poller.poll()
        return
    left_ms = (deadline - time.perf_counter_ns()) / 1e6
    if left_ms <= 0 or not poller.poll(max(1, int(left_ms + 0.999))):
        raise PoolError("timeout", f"no reply from {socket_path} within {timeout}s")


def acquire(
    socket_path: str,
    pool: str = "echo",
    timeout: float | None = 2.0,
    *,
    phases: dict[str, float] | None = None,
    report_dropped: bool = True,
) -> tuple[socket.socket, dict[str, Any]]:
    """Borrow one backend connection. Returns the connected socket (blocking) and the reply.

    ``phases``, if given, receives the duration of each step (ACQUIRE_PHASES, µs). An ok reply
    without its fd raises FdDroppedError; unless ``report_dropped`` is false (the caller then
    reports it itself with ``report_fd_dropped``, e.g. after its timed section), the manager is
    told first, so a lost grant is never silent.
    """
    reply, fd = _acquire_exchange(socket_path, _acquire_line(pool), timeout, phases)
    if reply.get("ok") is not True:
        _close_fd(fd)
        raise PoolError(str(reply.get("error", "internal")), str(reply.get("detail", "")))
    if fd is None:
        if report_dropped:
            report_fd_dropped(socket_path, pool, reply)
        raise FdDroppedError(reply)
    t0 = time.perf_counter_ns()
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        os.close(fd)
        raise PoolError("internal", f"received fd is not a socket: {exc}") from None
    if phases is not None:
        phases["sock_wrap_us"] = (time.perf_counter_ns() - t0) / 1000
    return sock, reply


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
