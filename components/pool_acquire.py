"""Pool protocol v1, the function's side: acquire one connection, and nothing else.

The cold function imports this inside its measured library load, so it is kept to what an
acquire needs: no module of its own beyond those the function has already loaded (os, socket,
select through socket, time; json only to parse the reply, loaded by the function for its record),
no array (the fds are read with memoryview.cast), no class hierarchy beyond the two errors.
``components.protocol`` (the manager, release, stats and reports) builds on it: one implementation.
"""

from __future__ import annotations

import os
import select
import socket
import time

MAX_REQUEST_BYTES = 4096
# Replies are small, but stats carries a histogram; cap to keep a broken peer from exhausting memory.
MAX_REPLY_BYTES = 1 << 20
# Client-side only: the manager could not be reached at all (no socket file, refused, reset).
MANAGER_UNAVAILABLE = "manager_unavailable"
# Client-side only: the manager granted a connection but its fd did not arrive (a sandbox such
# as gVisor imports only AF_UNIX fds from host sockets). Reported back with a ``report`` op.
FD_DROPPED = "fd_dropped"
# Phases of an acquire, in the order they happen (µs); their sum is the acquire minus call overhead.
ACQUIRE_PHASES = ("uds_connect_us", "request_write_us", "reply_recv_us", "reply_parse_us", "sock_wrap_us")

FD_SIZE = 4  # a C int: what SCM_RIGHTS carries per descriptor
# Room for a few fds so that surplus ones are received (and closed) instead of silently truncated.
ANC_SPACE = socket.CMSG_SPACE(8 * FD_SIZE)
RECV_FLAGS = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


class PoolError(Exception):
    """An error reply from the manager, or a failure to talk to it."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class FdDroppedError(PoolError):
    """An ok acquire reply that arrived without its file descriptor; ``reply`` is what did arrive."""

    def __init__(self, reply: dict) -> None:  # type: ignore[type-arg]
        super().__init__(FD_DROPPED)
        self.reply = reply


def fds_from_ancillary(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - (len(data) % FD_SIZE)
            fds.extend(memoryview(data[:usable]).cast("i"))
    return fds


def decode_line(line: bytes) -> dict:  # type: ignore[type-arg]
    """Parse one JSON object line; raises ValueError on anything else."""
    import json  # already loaded in the function (its record); here so the manager's import stays lean too

    obj = json.loads(line.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def acquire_line(pool: str, handoff: str | None = None) -> bytes:
    """The acquire request, byte-identical to the compact JSON of components.protocol; the caller
    has checked that ``pool`` (and ``handoff``) need no JSON escaping (plain_name)."""
    extra = b'","handoff":"' + handoff.encode() if handoff else b""
    return b'{"v":1,"op":"acquire","pool":"' + pool.encode() + extra + b'"}\n'


def plain_name(pool: str) -> bool:
    """A pool name that goes into the request line as it is (byte-identical to the compact JSON)."""
    return len(pool) < 1024 and pool.isascii() and pool.isprintable() and '"' not in pool and "\\" not in pool


def close_fd(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _wait(
    poller: select.poll, fileno: int, events: int, deadline: int | None, socket_path: str, timeout: float | None
) -> None:
    """Wait for ``events`` until the deadline (None: no limit); raises PoolError("timeout") when it passes."""
    poller.modify(fileno, events)
    if deadline is None:
        poller.poll()
        return
    left_ms = (deadline - time.perf_counter_ns()) / 1e6
    if left_ms <= 0 or not poller.poll(max(1, int(left_ms + 0.999))):
        raise PoolError("timeout", f"no reply from {socket_path} within {timeout}s")


def exchange(
    socket_path: str, line: bytes, timeout: float | None, phases: dict[str, float] | None
) -> tuple[dict, int | None]:  # type: ignore[type-arg]
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
    poller = select.poll()
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
        fileno = sock.fileno()
        poller.register(fileno, select.POLLOUT)
        try:
            view = memoryview(line)
            while view:
                try:
                    view = view[sock.send(view) :]
                except BlockingIOError:
                    _wait(poller, fileno, select.POLLOUT, deadline, socket_path, timeout)
            t2 = clock()
            buf = bytearray()
            while True:
                # Wait first: the manager has rarely answered yet, and a recvmsg() that finds
                # nothing would cost a syscall for an EAGAIN.
                _wait(poller, fileno, select.POLLIN, deadline, socket_path, timeout)
                try:
                    data, ancdata, _flags, _addr = sock.recvmsg(65536, ANC_SPACE, RECV_FLAGS)
                except BlockingIOError:
                    continue
                for extra in fds_from_ancillary(ancdata):
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
        close_fd(fd)
        raise
    finally:
        sock.close()
    if phases is not None:
        phases["uds_connect_us"] = (t1 - t0) / 1000
        phases["request_write_us"] = (t2 - t1) / 1000
        phases["reply_recv_us"] = (t3 - t2) / 1000
        phases["reply_parse_us"] = (t4 - t3) / 1000
    return reply, fd


def acquire(
    socket_path: str,
    pool: str = "echo",
    timeout: float | None = 2.0,
    *,
    phases: dict[str, float] | None = None,
    handoff: str | None = None,
    line: bytes | None = None,
) -> tuple[socket.socket, dict]:  # type: ignore[type-arg]
    """Borrow one backend connection: the connected socket (blocking) and the manager's reply.

    ``handoff="relay"`` asks for one end of an AF_UNIX socketpair the manager relays (reply
    ``meta.handoff == "relay"``). ``line`` is the request when a name needs JSON escaping
    (components.protocol builds it). An ok reply without its fd raises FdDroppedError (the caller
    reports it).
    """
    if line is None:
        if not plain_name(pool) or (handoff is not None and not plain_name(handoff)):
            raise ValueError(f"pool name {pool!r} needs components.protocol (JSON escaping)")
        line = acquire_line(pool, handoff)
    reply, fd = exchange(socket_path, line, timeout, phases)
    if reply.get("ok") is not True:
        close_fd(fd)
        raise PoolError(str(reply.get("error", "internal")), str(reply.get("detail", "")))
    if fd is None:
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
