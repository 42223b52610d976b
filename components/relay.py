"""Byte relay between two connected stream sockets, many relays in one event loop.

Used for runtimes that accept only AF_UNIX descriptors from the host (gVisor imports
AF_UNIX fds, drops TCP ones): the manager hands the function one end of an AF_UNIX
socketpair and relays bytes between the other end and the pooled TCP connection.

Per direction, bytes move source -> pipe -> destination with ``os.splice`` (no copy into
user space) where the kernel and Python offer it, else through a bounded user-space
buffer. Either way at most ``buffer_bytes`` per direction are in flight: a direction whose
pipe (or buffer) is full stops reading its source until the destination drains, so a
slow reader holds back the writer instead of growing memory.

Close semantics:
- EOF from one side -> ``shutdown(SHUT_WR)`` on the other once everything read was written
  (half-close); the other direction keeps flowing. Both directions ended -> both closed.
- A reset or broken pipe on either side -> both sockets closed at once; a TCP socket gets
  SO_LINGER 0 so its peer sees a reset too, not a clean end of stream.

A relay may carry a ``codec`` that transforms the bytes between the two sides (the pool manager's
TLS relay: the caller's side is plaintext, the backend's side TLS records): bytes then go
through a user-space buffer (no splice), ``codec.seal`` turns what ``a`` sends into what ``b``
gets, ``codec.open`` the reverse; ``codec.take_out`` returns bytes ``open`` produced for ``b``
(e.g. a KeyUpdate answer), ``codec.close_out`` what ``b`` gets when ``a`` ends, and
``codec.ended`` says ``b``'s stream ended inside the protocol (a close_notify). A codec error
resets the relay.

All sockets are non-blocking and the loop is level-triggered. A hub runs either in its own
thread (``start``/``stop``) or embedded in another event loop: register ``fileno()`` for
readability and call ``poll(0)`` when it fires.

Stdlib only: runs unchanged inside images.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# Kernel default pipe size; also the bound per direction of the fallback buffer.
DEFAULT_BUFFER_BYTES = 64 * 1024
# Bytes one direction may move per readiness event before the loop serves others.
BURST_BYTES = 1 << 20

_SPLICE = getattr(os, "splice", None)
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH})
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {on, 0 s}: close sends RST

# Outcomes of a relay.
CLOSED = "closed"  # both directions ended with EOF
RESET = "reset"  # a side reset or failed; both closed at once
STOPPED = "stopped"  # the hub was closed while the relay ran
EXPIRED = "expired"  # no byte moved for longer than the idle limit (``expire_idle``); both closed at once


def splice_available() -> bool:
    """Whether this Python offers os.splice (Linux, Python >= 3.10)."""
    return _SPLICE is not None


class Codec(Protocol):
    """What a transforming relay calls (see the module docstring); errors it raises reset the relay."""

    @property
    def ended(self) -> bool: ...

    def initial(self) -> bytes: ...

    def seal(self, data: bytes) -> bytes: ...

    def open(self, data: bytes) -> bytes: ...

    def take_out(self) -> bytes: ...

    def close_out(self) -> bytes: ...


class _Reset(Exception):
    """A side failed; the relay must be torn down."""


@dataclass
class RelayResult:
    """What one relay moved and how it ended; passed to ``on_close`` and kept in ``Relay.result``."""

    relay_id: int
    outcome: str
    bytes_a_to_b: int
    bytes_b_to_a: int
    duration_s: float
    zero_copy: bool
    detail: str = ""


class _Flow:
    """One direction: bytes read from ``src`` and written to ``dst``."""

    __slots__ = (
        "at_eof",
        "buf",
        "cap",
        "dst",
        "ended",
        "eof",
        "moved",
        "pending",
        "pipe_full",
        "pipe_r",
        "pipe_w",
        "shut",
        "src",
        "transform",
    )

    def __init__(
        self,
        src: socket.socket,
        dst: socket.socket,
        cap: int,
        zero_copy: bool,
        transform: Callable[[bytes], bytes] | None = None,
        at_eof: Callable[[], bytes] | None = None,
        ended: Callable[[], bool] | None = None,
    ) -> None:
        self.src = src
        self.dst = dst
        self.cap = cap
        self.eof = False  # source reached end of stream
        self.shut = False  # destination was shut down for writing (direction finished)
        self.moved = 0  # bytes written to dst
        self.pending = 0  # bytes read but not yet written
        self.pipe_full = False  # splice into the pipe would block although the source may have data
        self.buf = bytearray()
        self.pipe_r = -1
        self.pipe_w = -1
        self.transform = transform  # bytes read -> bytes to write (a codec); forces the buffer
        self.at_eof = at_eof  # bytes to write once the source ended
        self.ended = ended  # the source's stream ended inside the protocol (no more bytes count)
        if zero_copy and transform is None:
            self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                self.cap = fcntl.fcntl(self.pipe_w, _F_SETPIPE_SZ, cap)
            except OSError:
                self.cap = DEFAULT_BUFFER_BYTES  # above pipe-max-size: keep the kernel default

    @property
    def zero_copy(self) -> bool:
        return self.pipe_w >= 0

    def wants_read(self) -> bool:
        return not self.eof and not self.pipe_full and self.pending < self.cap

    def wants_write(self) -> bool:
        return self.pending > 0

    def close_pipe(self) -> None:
        for fd in (self.pipe_r, self.pipe_w):
            if fd >= 0:
                os.close(fd)
        self.pipe_r = self.pipe_w = -1

    # The two halves of a transfer. Each returns bytes moved, 0 when it would block.
    def fill(self) -> int:
        room = self.cap - self.pending
        try:
            if self.pipe_w >= 0:
                assert _SPLICE is not None
                n = _SPLICE(self.src.fileno(), self.pipe_w, room, flags=_SPLICE_FLAGS)
            else:
                data = self.src.recv(room)
                n = len(data)
                if self.transform is not None and data:
                    data = self.transform(data)
                self.buf += data
                if self.transform is not None:
                    self.pending += len(data)
                    if n == 0:
                        self._end()
                    elif self.ended is not None and self.ended():
                        self.eof = True
                    return n
        except BlockingIOError:
            # With bytes in the pipe, EAGAIN may mean "pipe out of slots" (a slot per socket
            # buffer, not per byte): stop reading until the pipe drains, or the loop would spin.
            if self.pending:
                self.pipe_full = True
            return 0
        except InterruptedError:
            return 0
        except OSError as exc:
            if exc.errno == errno.EINVAL and self.pipe_w >= 0 and not self.pending and not self.moved:
                # This socket type cannot splice: fall back to copying (nothing is in flight).
                self.close_pipe()
                self.cap = DEFAULT_BUFFER_BYTES
                return self.fill()
            raise _Reset(f"read: {exc.strerror or exc}") from None
        except _Reset:
            raise
        except Exception as exc:  # a codec refused the bytes (e.g. a TLS record failed authentication)
            raise _Reset(f"codec: {exc}") from None
        if n == 0:
            self.eof = True
        self.pending += n
        return n

    def _end(self) -> None:
        self.eof = True
        if self.at_eof is not None:
            tail = self.at_eof()
            self.buf += tail
            self.pending += len(tail)

    def inject(self, data: bytes) -> None:
        """Queue bytes for the destination that did not come from the source (buffer mode only)."""
        self.buf += data
        self.pending += len(data)

    def drain(self) -> int:
        try:
            if self.pipe_r >= 0:
                assert _SPLICE is not None
                n = _SPLICE(self.pipe_r, self.dst.fileno(), self.pending, flags=_SPLICE_FLAGS)
            else:
                n = self.dst.send(self.buf, _NOSIGNAL)
                del self.buf[:n]
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise _Reset(f"write: {exc.strerror or exc}") from None
        self.pending -= n
        self.moved += n
        if n:
            self.pipe_full = False
        return n

    def pump(self) -> None:
        budget = BURST_BYTES
        while budget > 0:
            got = self.fill() if self.wants_read() else 0
            put = self.drain() if self.pending else 0
            budget -= put
            if not got and not put:
                break
        if self.eof and not self.pending and not self.shut:
            self.shut = True
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError as exc:
                if exc.errno != errno.ENOTCONN:
                    raise _Reset(f"shutdown: {exc.strerror or exc}") from None


class Relay:
    """Two sockets joined by a hub. ``result`` is set once the relay has ended."""

    def __init__(
        self,
        relay_id: int,
        a: socket.socket,
        b: socket.socket,
        buffer_bytes: int,
        zero_copy: bool,
        on_close: Callable[[RelayResult], None] | None,
        codec: Codec | None = None,
    ) -> None:
        self.id = relay_id
        self.a = a
        self.b = b
        self.on_close = on_close
        self.started = time.monotonic()
        self.last_active = self.started  # last time a byte moved in either direction
        self.result: RelayResult | None = None
        self.masks = [0, 0]
        self.codec = codec
        if codec is not None:
            self.a_to_b = _Flow(a, b, buffer_bytes, False, codec.seal, codec.close_out)
            self.b_to_a = _Flow(b, a, buffer_bytes, False, codec.open, None, lambda: codec.ended)
            self.b_to_a.inject(codec.initial())  # bytes the codec already holds for a
            return
        self.a_to_b = _Flow(a, b, buffer_bytes, zero_copy)
        try:
            self.b_to_a = _Flow(b, a, buffer_bytes, zero_copy)
        except BaseException:
            self.a_to_b.close_pipe()
            raise

    def pump(self) -> None:
        self.a_to_b.pump()
        self.b_to_a.pump()
        if self.codec is not None:
            out = self.codec.take_out()  # e.g. a KeyUpdate answer, behind what a already sent
            if out:
                if self.a_to_b.shut:
                    raise _Reset("codec has bytes for a side already shut down")
                self.a_to_b.inject(out)
                self.a_to_b.pump()

    @property
    def done(self) -> bool:
        return self.a_to_b.shut and self.b_to_a.shut

    def progress(self) -> int:
        """Bytes read or written so far, both directions: grows whenever the relay does anything."""
        f, g = self.a_to_b, self.b_to_a
        return f.moved + f.pending + g.moved + g.pending + f.eof + g.eof

    def wanted_masks(self) -> tuple[int, int]:
        r, w = selectors.EVENT_READ, selectors.EVENT_WRITE
        a_mask = (r if self.a_to_b.wants_read() else 0) | (w if self.b_to_a.wants_write() else 0)
        b_mask = (r if self.b_to_a.wants_read() else 0) | (w if self.a_to_b.wants_write() else 0)
        return a_mask, b_mask


@dataclass
class HubStats:
    """Totals since the hub was made; bytes are counted when a relay ends.

    ``cpu_s`` is the CPU time of the thread(s) running ``poll``, spent relaying (idle waits cost none).
    """

    active: int = 0
    started: int = 0
    closed: int = 0
    reset: int = 0
    stopped: int = 0
    expired: int = 0
    bytes_a_to_b: int = 0
    bytes_b_to_a: int = 0
    cpu_s: float = 0.0
    zero_copy: bool = field(default_factory=splice_available)

    @property
    def bytes_total(self) -> int:
        return self.bytes_a_to_b + self.bytes_b_to_a

    @property
    def cpu_ms_per_mb(self) -> float | None:
        """CPU milliseconds per MB (10**6 bytes) relayed, both directions counted."""
        if not self.bytes_total:
            return None
        return self.cpu_s * 1e3 / (self.bytes_total / 1e6)

    def as_dict(self) -> dict[str, object]:
        per_mb = self.cpu_ms_per_mb
        return {
            "active": self.active,
            "started": self.started,
            "closed": self.closed,
            "reset": self.reset,
            "stopped": self.stopped,
            "expired": self.expired,
            "bytes_a_to_b": self.bytes_a_to_b,
            "bytes_b_to_a": self.bytes_b_to_a,
            "cpu_s": round(self.cpu_s, 6),
            "cpu_ms_per_mb": None if per_mb is None else round(per_mb, 3),
            "zero_copy": self.zero_copy,
        }


class RelayHub:
    """Many relays in one selector loop.

    ``add`` may be called from any thread; the relay starts at the hub's next ``poll``.
    The hub owns the sockets it is given: it closes them when the relay ends.
    """

    def __init__(self, buffer_bytes: int = DEFAULT_BUFFER_BYTES, zero_copy: bool | None = None) -> None:
        if buffer_bytes < 4096:
            raise ValueError(f"buffer_bytes must be at least 4096, got {buffer_bytes}")
        self.buffer_bytes = buffer_bytes
        self.zero_copy = splice_available() if zero_copy is None else zero_copy and splice_available()
        self.stats = HubStats(zero_copy=self.zero_copy)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._incoming: collections.deque[Relay] = collections.deque()
        self._relays: dict[int, Relay] = {}
        self._next_id = 1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False

    # ------------------------------------------------------------------ API
    def fileno(self) -> int:
        """A descriptor that turns readable when ``poll`` has work (for embedding in another loop)."""
        return self._selector.fileno()  # type: ignore[attr-defined, no-any-return]

    def add(
        self,
        a: socket.socket,
        b: socket.socket,
        on_close: Callable[[RelayResult], None] | None = None,
        codec: Codec | None = None,
    ) -> Relay:
        """Relay between ``a`` and ``b`` (connected stream sockets) until both directions end.

        Ownership of both sockets passes to the hub. ``on_close`` runs in the hub's thread.
        ``codec`` transforms the bytes (see the module docstring).
        """
        for name, sock in (("a", a), ("b", b)):
            if sock.fileno() < 0:
                raise ValueError(f"socket {name} is closed")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"socket {name} is not a stream socket ({sock.type!r})")
        if a.fileno() == b.fileno():
            raise ValueError("a and b are the same socket")
        with self._lock:
            if self._closed:
                raise RuntimeError("relay hub is closed")
            relay_id = self._next_id
            self._next_id += 1
            relay = Relay(relay_id, a, b, self.buffer_bytes, self.zero_copy, on_close, codec)
            a.setblocking(False)
            b.setblocking(False)
            self._incoming.append(relay)
        self._wake()
        return relay

    def poll(self, timeout: float | None = 0.0) -> int:
        """Serve ready relays once, waiting up to ``timeout`` s for readiness. Returns events handled."""
        cpu0 = time.thread_time()
        self._admit()
        handled = 0
        for key, mask in self._selector.select(timeout):
            if key.data is None:
                self._drain_wake()
                self._admit()
                continue
            relay, _index = key.data
            if relay.result is not None:
                continue  # ended by an earlier event of this round
            handled += 1
            self._serve(relay, mask)
        self.stats.cpu_s += time.thread_time() - cpu0
        return handled

    def expire_idle(self, idle_s: float, now: float | None = None) -> int:
        """End relays (outcome ``expired``) in which no byte moved for more than ``idle_s`` seconds.

        Call from the thread running ``poll``. Returns how many were ended.
        """
        now = time.monotonic() if now is None else now
        stale = [r for r in list(self._relays.values()) if r.result is None and now - r.last_active > idle_s]
        for relay in stale:
            self._finish(relay, EXPIRED, f"no bytes for {idle_s:g} s")
        return len(stale)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._relays) + len(self._incoming)

    def start(self, name: str = "relay-hub") -> None:
        """Run the loop in a daemon thread until ``stop``."""
        if self._thread is not None:
            raise RuntimeError("relay hub already started")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop thread (relays stay open; ``close`` ends them)."""
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"relay hub thread did not stop within {timeout} s")
            self._thread = None
        self._stopping = False

    def close(self) -> None:
        """Stop the loop, end every relay (outcome ``stopped``) and release the hub's descriptors."""
        self.stop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._incoming)
            self._incoming.clear()
        for relay in pending:
            self._finish(relay, STOPPED, "hub closed", registered=False)
        for relay in list(self._relays.values()):
            self._finish(relay, STOPPED, "hub closed")
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> RelayHub:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _run(self) -> None:
        while not self._stopping:
            self.poll(1.0)

    def _wake(self) -> None:
        # BlockingIOError: a wake-up is already pending; OSError: the hub is closed.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _admit(self) -> None:
        while True:
            with self._lock:
                if not self._incoming:
                    return
                relay = self._incoming.popleft()
                self._relays[relay.id] = relay
            self.stats.started += 1
            self.stats.active += 1
            # Serve at once: data may already wait on either side.
            self._serve(relay, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _serve(self, relay: Relay, _mask: int) -> None:
        before = relay.progress()
        try:
            relay.pump()
        except _Reset as exc:
            self._finish(relay, RESET, str(exc))
            return
        if relay.done:
            self._finish(relay, CLOSED)
            return
        if relay.progress() != before:
            relay.last_active = time.monotonic()
        self._update_interest(relay)

    def _update_interest(self, relay: Relay) -> None:
        for index, (sock, mask) in enumerate(zip((relay.a, relay.b), relay.wanted_masks(), strict=True)):
            current = relay.masks[index]
            if mask == current:
                continue
            if current == 0:
                self._selector.register(sock, mask, (relay, index))
            elif mask == 0:
                self._selector.unregister(sock)
            else:
                self._selector.modify(sock, mask, (relay, index))
            relay.masks[index] = mask

    def _finish(self, relay: Relay, outcome: str, detail: str = "", registered: bool = True) -> None:
        for index, sock in enumerate((relay.a, relay.b)):
            if registered and relay.masks[index]:
                self._selector.unregister(sock)
                relay.masks[index] = 0
            if outcome != CLOSED and sock.family in (socket.AF_INET, socket.AF_INET6):
                # Abnormal end: let the TCP peer see a reset, not a clean end of stream.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            sock.close()
        zero_copy = relay.a_to_b.zero_copy and relay.b_to_a.zero_copy
        relay.a_to_b.close_pipe()
        relay.b_to_a.close_pipe()
        result = RelayResult(
            relay_id=relay.id,
            outcome=outcome,
            bytes_a_to_b=relay.a_to_b.moved,
            bytes_b_to_a=relay.b_to_a.moved,
            duration_s=time.monotonic() - relay.started,
            zero_copy=zero_copy,
            detail=detail,
        )
        relay.result = result
        with self._lock:
            self._relays.pop(relay.id, None)
        if registered:
            self.stats.active -= 1
        else:
            self.stats.started += 1  # never admitted: count it so started == closed + reset + stopped
        self.stats.bytes_a_to_b += result.bytes_a_to_b
        self.stats.bytes_b_to_a += result.bytes_b_to_a
        if outcome == CLOSED:
            self.stats.closed += 1
        elif outcome == RESET:
            self.stats.reset += 1
        elif outcome == EXPIRED:
            self.stats.expired += 1
        else:
            self.stats.stopped += 1
        if relay.on_close is not None:
            relay.on_close(result)
