"""The function's side of a kernel TLS session: plain reads and writes, clear errors for the rest.

With kernel TLS installed on the handed-out socket the kernel encrypts and decrypts application
data; ``read``/``recv`` of any other record fails with EIO. ``KernelTlsSocket.recv`` then reads
that record with ``recvmsg`` and its ``TLS_GET_RECORD_TYPE`` control message and says what it
was: a close_notify or an alert ends the session with a named error, a NewSessionTicket is
skipped (counted), and a KeyUpdate ends the session as well, because the traffic secret needed
to follow it stayed with the pool manager (and older kernels, 6.1 among them, cannot install new
keys on a live kernel TLS socket at all). A record that fails authentication (EBADMSG: wrong keys or sequence
number, tampering, or keys the peer updated) is reported as such; nothing is ever returned as
data that the kernel did not authenticate.

No cryptographic library is loaded: this module imports only ``errno``, ``os`` and ``socket``.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

SOL_TLS = 282
TLS_GET_RECORD_TYPE = 2
# TLS content types and handshake message types (RFC 8446).
ALERT, HANDSHAKE, APPLICATION_DATA = 21, 22, 23
NEW_SESSION_TICKET, KEY_UPDATE = 4, 24
MAX_RECORD = 16384 + 256
ALERT_NAMES = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    47: "illegal_parameter",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    80: "internal_error",
    90: "user_canceled",
    109: "missing_extension",
    116: "certificate_required",
}


class KernelTlsError(ConnectionError):
    """The kernel TLS session cannot go on; the message says why."""


class KernelTlsClosed(KernelTlsError):
    """The server ended the session with close_notify."""


class KernelTlsAlert(KernelTlsError):
    def __init__(self, level: int, description: int) -> None:
        self.level, self.description = level, description
        name = ALERT_NAMES.get(description, "unknown")
        kind = "fatal" if level == 2 else "warning"
        super().__init__(f"the server sent a {kind} TLS alert {name} ({description})")


class KernelTlsRekey(KernelTlsError):
    """The server sent a KeyUpdate that kernel TLS cannot follow here."""


def record_type(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The TLS record type from recvmsg's control messages (None if the kernel gave none)."""
    for level, kind, data in ancdata:
        if level == SOL_TLS and kind == TLS_GET_RECORD_TYPE and data:
            return data[0]
    return None


def _kernel() -> str:
    return os.uname().release


class KernelTlsSocket:
    """A connected socket with kernel TLS in both directions, socket-like for the function."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.tickets_skipped = 0
        self._pending = b""

    def fileno(self) -> int:
        return self.sock.fileno()

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self.sock.gettimeout()

    def getpeername(self) -> Any:
        return self.sock.getpeername()

    def getsockname(self) -> Any:
        return self.sock.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self.sock.setsockopt(*args)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> KernelTlsSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._translate(exc) from None

    def recv(self, bufsize: int) -> bytes:
        if self._pending:
            out, self._pending = self._pending[:bufsize], self._pending[bufsize:]
            return out
        while True:
            try:
                return self.sock.recv(bufsize)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise self._translate(exc) from None
            data = self._control_record()
            if data:
                out, self._pending = data[:bufsize], data[bufsize:]
                return out

    def _control_record(self) -> bytes:
        """Read the non-data record that made ``recv`` fail with EIO and act on it; returns
        application data if that is what the record turned out to be."""
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(MAX_RECORD, socket.CMSG_SPACE(1))
        except OSError as exc:
            raise self._translate(exc) from None
        kind = record_type(ancdata)
        if kind == APPLICATION_DATA:
            return data
        if kind == ALERT and len(data) == 2:
            if data[1] == 0:
                raise KernelTlsClosed("the server ended the TLS session (close_notify)")
            raise KernelTlsAlert(data[0], data[1])
        if kind == HANDSHAKE:
            view = data
            while len(view) >= 4:
                msg_type, length = view[0], int.from_bytes(view[1:4], "big")
                if msg_type == NEW_SESSION_TICKET:
                    self.tickets_skipped += 1
                elif msg_type == KEY_UPDATE:
                    raise KernelTlsRekey(
                        "the server sent a TLS KeyUpdate: kernel TLS would need the next traffic keys, "
                        f"which this function does not hold (kernel {_kernel()} cannot rekey a handed-out "
                        "session); the session ends here"
                    )
                else:
                    raise KernelTlsError(f"unexpected post-handshake message type {msg_type} under kernel TLS")
                view = view[4 + length :]
            return b""
        raise KernelTlsError(f"unexpected TLS record (type {kind}, {len(data)} bytes) under kernel TLS")

    @staticmethod
    def _translate(exc: OSError) -> OSError:
        if exc.errno == errno.EBADMSG:
            return KernelTlsError(
                "kernel TLS: a record failed authentication (EBADMSG: wrong keys or sequence number, "
                "tampering, or keys the server updated); the session is unusable"
            )
        if exc.errno == errno.EKEYEXPIRED:
            return KernelTlsRekey("kernel TLS: the server updated its keys (KeyUpdate) and no new keys were installed")
        return exc
