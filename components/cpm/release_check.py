"""Is a handed-back TCP connection clean enough for the next caller? Bytes and socket state.

A connection comes back from a caller that may have left anything on it: bytes not yet read or
not yet sent, a request whose answer is still on its way, socket options, file status flags or an
owner for SIGIO. ``traffic`` is read when a connection goes into the pool; ``dirty_bytes``
compares it with the state at release; ``restore_state`` puts every option and flag listed in
``OPTIONS`` back to what a fresh pool socket has, and says which it could not.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
from typing import Any

from components.pool_config import PoolConfig, apply_socket_options

SIOCINQ = 0x541B  # FIONREAD: bytes received, not yet read
SIOCOUTQ = 0x5411  # TIOCOUTQ: bytes not yet acknowledged by the peer (unsent included)
SIOCOUTQNSD = 0x894B  # bytes not yet sent at all
# struct tcp_info offsets (linux/tcp.h): ms since the last data sent / received, bytes acked / received.
_TCPI_LAST_DATA_SENT = 44
_TCPI_LAST_DATA_RECV = 52
_TCPI_BYTES_ACKED = 120
_TCPI_BYTES_RECEIVED = 128
_TCPI_SIZE = 136
SO_DETACH_FILTER = 27
TCP_ULP = 31
F_GETSIG, F_SETSIG = 11, 10
# File status flags a caller may have set on the open file the fd shares with ours.
_CLEARED_FLAGS = os.O_NONBLOCK | os.O_APPEND | getattr(os, "O_ASYNC", 0o20000)

# (name, level, option, buffer size or 0 for an int); families: None = both.
_Option = tuple[str, int, int, int, "int | None"]
OPTIONS: tuple[_Option, ...] = (
    ("SO_KEEPALIVE", socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0, None),
    ("TCP_KEEPIDLE", socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 0, None),
    ("TCP_KEEPINTVL", socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 0, None),
    ("TCP_KEEPCNT", socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 0, None),
    ("TCP_USER_TIMEOUT", socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 18), 0, None),
    ("TCP_NODELAY", socket.IPPROTO_TCP, socket.TCP_NODELAY, 0, None),
    ("TCP_CORK", socket.IPPROTO_TCP, getattr(socket, "TCP_CORK", 3), 0, None),
    ("TCP_NOTSENT_LOWAT", socket.IPPROTO_TCP, getattr(socket, "TCP_NOTSENT_LOWAT", 25), 0, None),
    ("TCP_CONGESTION", socket.IPPROTO_TCP, getattr(socket, "TCP_CONGESTION", 13), 16, None),
    ("SO_RCVTIMEO", socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16, None),
    ("SO_SNDTIMEO", socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16, None),
    ("SO_LINGER", socket.SOL_SOCKET, socket.SO_LINGER, 8, None),
    ("SO_OOBINLINE", socket.SOL_SOCKET, socket.SO_OOBINLINE, 0, None),
    ("SO_RCVLOWAT", socket.SOL_SOCKET, socket.SO_RCVLOWAT, 0, None),
    ("SO_PRIORITY", socket.SOL_SOCKET, getattr(socket, "SO_PRIORITY", 12), 0, None),
    ("SO_MARK", socket.SOL_SOCKET, getattr(socket, "SO_MARK", 36), 0, None),
    ("SO_BINDTODEVICE", socket.SOL_SOCKET, getattr(socket, "SO_BINDTODEVICE", 25), 16, None),
    ("IP_TOS", socket.IPPROTO_IP, socket.IP_TOS, 0, socket.AF_INET),
    ("IP_TTL", socket.IPPROTO_IP, socket.IP_TTL, 0, socket.AF_INET),
    ("IPV6_TCLASS", socket.IPPROTO_IPV6, getattr(socket, "IPV6_TCLASS", 67), 0, socket.AF_INET6),
    ("IPV6_UNICAST_HOPS", socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 0, socket.AF_INET6),
    ("TCP_ULP", socket.IPPROTO_TCP, TCP_ULP, 16, None),  # kTLS & co: cannot be removed, only refused
)
_NOT_RESETTABLE = frozenset({"TCP_ULP"})


_NAMES = frozenset({"TCP_ULP", "SO_BINDTODEVICE", "TCP_CONGESTION"})  # NUL-padded strings


def _get(sock: Any, name: str, level: int, opt: int, size: int) -> int | bytes:
    if size:
        value: bytes = sock.getsockopt(level, opt, size)
        return value.rstrip(b"\0") if name in _NAMES else value
    result: int = sock.getsockopt(level, opt)
    return result


def _options_of(sock: Any) -> dict[str, int | bytes | None]:
    out: dict[str, int | bytes | None] = {}
    for name, level, opt, size, family in OPTIONS:
        if family is not None and family != sock.family:
            continue
        try:
            out[name] = _get(sock, name, level, opt, size)
        except OSError:
            out[name] = None  # not offered by this kernel: the same for every socket
    return out


def baseline(family: int, cfg: PoolConfig) -> dict[str, int | bytes | None]:
    """What a fresh socket of this pool has: the pool's own options over the kernel's defaults."""
    with socket.socket(family, socket.SOCK_STREAM) as fresh:
        apply_socket_options(fresh, cfg)
        return _options_of(fresh)


def traffic(sock: Any) -> tuple[int, int]:
    """(bytes acknowledged by the peer, bytes received) so far on a TCP connection."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_SIZE)
    if len(info) < _TCPI_SIZE:
        return (-1, -1)  # a kernel without the byte counters: nothing can be proven
    acked, received = struct.unpack_from("QQ", info, _TCPI_BYTES_ACKED)
    return int(acked), int(received)


def _queued(fd: int, request: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, request, buf)
    return int(buf[0])


def dirty_bytes(sock: Any, at_handout: tuple[int, int]) -> str:
    """Why bytes make the connection unsafe for another caller, or "" if none do.

    Unread input, unsent output and output the backend has not acknowledged are dirty. The pool
    cannot know a tcp backend's protocol, so a request still being answered is judged from the
    traffic since the hand-out: the caller sent something and either nothing came back, or the last data moved out (the
    kernel's last-sent/last-received clocks, in ticks). When both fall in the same tick, only
    exactly as many bytes back as went out (an echo-style exchange) counts as answered.
    """
    fd = sock.fileno()
    if _queued(fd, SIOCINQ) > 0:
        return "unread_data"
    if _queued(fd, SIOCOUTQNSD) > 0:
        return "unsent_data"
    if _queued(fd, SIOCOUTQ) > 0:
        return "request_in_flight"  # sent, not even acknowledged by the backend yet
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_SIZE)
    if len(info) < _TCPI_SIZE or at_handout[0] < 0:
        return "traffic_unknown"
    acked, received = struct.unpack_from("QQ", info, _TCPI_BYTES_ACKED)
    sent_ago = struct.unpack_from("I", info, _TCPI_LAST_DATA_SENT)[0]
    recv_ago = struct.unpack_from("I", info, _TCPI_LAST_DATA_RECV)[0]
    sent, got = acked - at_handout[0], received - at_handout[1]
    if sent <= 0:
        return ""
    if got <= 0:
        return "request_in_flight"
    if recv_ago < sent_ago or (recv_ago == sent_ago and got == sent):
        return ""
    return "request_in_flight"


def restore_state(sock: Any, want: dict[str, int | bytes | None]) -> tuple[list[str], str]:
    """Put options, file status flags, owner and signal back to the pool's; returns (what was
    reset, why the connection must be refused or "")."""
    reset: list[str] = []
    fd = sock.fileno()
    for name, level, opt, size, family in OPTIONS:
        if family is not None and family != sock.family:
            continue
        target = want.get(name)
        if target is None:
            continue
        try:
            current = _get(sock, name, level, opt, size)
        except OSError:
            return reset, f"option_unreadable:{name}"
        if current == target:
            continue
        if name in _NOT_RESETTABLE:
            return reset, f"option_changed:{name}"
        try:
            if name == "SO_LINGER":
                # Turning lingering off keeps the old time (still read back): zero it while on.
                sock.setsockopt(level, opt, struct.pack("ii", 1, 0))
            sock.setsockopt(level, opt, target)
            if _get(sock, name, level, opt, size) != target:
                return reset, f"option_changed:{name}"
        except OSError:
            return reset, f"option_changed:{name}"
        reset.append(name)
    try:
        # A socket filter (SO_ATTACH_FILTER/BPF) would keep filtering the next caller's input.
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
        reset.append("SO_ATTACH_FILTER")
    except OSError as exc:
        if exc.errno != 2:  # ENOENT: there was none
            return reset, "option_changed:SO_ATTACH_FILTER"
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if flags & _CLEARED_FLAGS:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~_CLEARED_FLAGS)
        if flags & _CLEARED_FLAGS & ~os.O_NONBLOCK:
            # O_NONBLOCK alone is routine (any timeout sets it); pooled sockets go out blocking.
            reset.append("file_flags")
    if fcntl.fcntl(fd, fcntl.F_GETOWN) != 0:
        fcntl.fcntl(fd, fcntl.F_SETOWN, 0)
        reset.append("owner")
    if fcntl.fcntl(fd, F_GETSIG) != 0:
        fcntl.fcntl(fd, F_SETSIG, 0)
        reset.append("signal")
    if fcntl.fcntl(fd, fcntl.F_GETFL) & _CLEARED_FLAGS or fcntl.fcntl(fd, fcntl.F_GETOWN) != 0:
        return reset, "file_flags"
    return reset, ""
