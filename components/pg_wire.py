"""Minimal PostgreSQL v3 client that adopts a session already at ReadyForQuery.

The pool manager does startup and authentication; the function receives the socket
and continues the session from there, so this client never needs credentials and never
speaks the startup phase. It covers what an OLTP function needs: simple query, extended
query with parameters (one round trip: Parse/Bind/Describe/Execute/Sync), errors with
SQLSTATE, transaction status, asynchronous NoticeResponse/ParameterStatus/Notification,
and Terminate. Values travel in text format; results come back as ``str | None``.

Stdlib only and cheap to import: it runs in a cold function process.
"""

from __future__ import annotations

import codecs
import contextlib
import socket
import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_HDR = struct.Struct("!ci")

# Transaction status bytes of ReadyForQuery.
IDLE = "I"
IN_TRANSACTION = "T"
FAILED_TRANSACTION = "E"

_SYNC = b"S\x00\x00\x00\x04"
_TERMINATE = b"X\x00\x00\x00\x04"
_RECV_SIZE = 65536
# A message longer than this is a protocol desync or a hostile peer, not a result row.
MAX_MESSAGE_BYTES = 1 << 30

# ErrorResponse / NoticeResponse field codes worth a name.
_FIELD_NAMES = {
    "S": "severity_local",
    "V": "severity",
    "C": "sqlstate",
    "M": "message",
    "D": "detail",
    "H": "hint",
    "P": "position",
    "W": "where",
    "s": "schema",
    "t": "table",
    "c": "column",
    "n": "constraint",
}


class PgWireError(Exception):
    """Base of every error raised here."""


class ProtocolError(PgWireError):
    """The byte stream did not follow the protocol (or the peer closed it)."""


class ConnectionClosed(ProtocolError):
    """The server closed the connection (EOF or reset)."""


class PgError(PgWireError):
    """An ErrorResponse from the server. ``fatal`` means the server ends the session."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self.sqlstate = fields.get("C", "")
        self.severity = fields.get("V") or fields.get("S", "ERROR")
        self.message = fields.get("M", "")
        self.detail = fields.get("D", "")
        super().__init__(f"{self.severity} {self.sqlstate}: {self.message}")

    @property
    def fatal(self) -> bool:
        return self.severity in ("FATAL", "PANIC")


class Result:
    """Outcome of one statement: its command tag and, for row-returning ones, the rows as text.

    A plain class rather than a dataclass: importing dataclasses costs a cold process ~10 ms."""

    __slots__ = ("columns", "command", "rows")

    def __init__(
        self,
        command: str = "",
        columns: list[str] | None = None,
        rows: list[tuple[str | None, ...]] | None = None,
    ) -> None:
        self.command = command
        self.columns: list[str] = columns if columns is not None else []
        self.rows: list[tuple[str | None, ...]] = rows if rows is not None else []

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return (self.command, self.columns, self.rows) == (other.command, other.columns, other.rows)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Result(command={self.command!r}, columns={self.columns!r}, rows={self.rows!r})"

    @property
    def rowcount(self) -> int:
        """Rows affected per the command tag (INSERT 0 3 → 3, UPDATE 1 → 1), else -1."""
        last = self.command.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else -1

    def scalar(self) -> str | None:
        if not self.rows or not self.rows[0]:
            raise PgWireError(f"{self.command or 'statement'} returned no value")
        return self.rows[0][0]


def parse_fields(payload: bytes) -> dict[str, str]:
    """Fields of an ErrorResponse/NoticeResponse: type byte + C string, ended by a zero byte."""
    out: dict[str, str] = {}
    for part in payload.split(b"\x00"):
        if part:
            out[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return out


def describe_fields(fields: dict[str, str]) -> dict[str, str]:
    """The same fields under readable names, for logs and JSON."""
    return {_FIELD_NAMES.get(k, k): v for k, v in fields.items()}


def _cstr(text: str, encoding: str) -> bytes:
    data = text.encode(encoding)
    if b"\x00" in data:
        raise ValueError("a NUL byte cannot travel in a protocol string")
    return data + b"\x00"


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + _I32.pack(len(body) + 4) + body


def encode_param(value: Any) -> str | None:
    """Text-format representation of a Python value; the server infers the type (OID 0)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def _python_encoding(pg_name: str) -> str:
    name = pg_name.upper().replace("-", "").replace("_", "")
    if name in ("UTF8", "UNICODE", "SQLASCII"):
        return "utf-8"
    try:
        return codecs.lookup(pg_name).name
    except LookupError:
        return "utf-8"


class Session:
    """A PostgreSQL session continued from ReadyForQuery on a socket someone else authenticated.

    Not thread-safe. After a ``PgError`` that is not fatal the session is at ReadyForQuery
    again and usable (inside a failed transaction until ROLLBACK, as the server dictates).
    """

    def __init__(
        self,
        sock: socket.socket,
        parameters: dict[str, str] | None = None,
        backend_pid: int | None = None,
        secret_key: int | None = None,
        tx_status: str = IDLE,
    ) -> None:
        self.sock = sock
        self.parameters: dict[str, str] = dict(parameters or {})
        self.backend_pid = backend_pid
        self.secret_key = secret_key
        self.tx_status = tx_status
        self.notices: list[dict[str, str]] = []
        self.notifications: list[tuple[int, str, str]] = []
        self.closed = False
        self._buf = bytearray()
        self._pos = 0
        self._encoding = _python_encoding(self.parameters.get("client_encoding", "UTF8"))

    @classmethod
    def adopt(cls, sock: socket.socket, meta: dict[str, Any] | None = None) -> Session:
        """Wrap an injected socket; ``meta`` is the pool's description of the session."""
        meta = meta or {}
        params = meta.get("parameters") or {}
        return cls(
            sock,
            parameters={str(k): str(v) for k, v in params.items()},
            backend_pid=meta.get("backend_pid"),
            secret_key=meta.get("secret_key"),
            tx_status=str(meta.get("tx_status") or IDLE),
        )

    # -- state -----------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self.tx_status in (IN_TRANSACTION, FAILED_TRANSACTION)

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    # -- reading ---------------------------------------------------------------

    def _fill(self, need: int) -> None:
        """Make at least ``need`` unread bytes available in the buffer."""
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        while len(self._buf) - self._pos < need:
            try:
                chunk = self.sock.recv(_RECV_SIZE)
            except (ConnectionResetError, BrokenPipeError) as exc:
                self.closed = True
                raise ConnectionClosed(f"connection reset by the server: {exc}") from None
            if not chunk:
                self.closed = True
                raise ConnectionClosed("server closed the connection")
            self._buf += chunk

    def _read_raw(self) -> tuple[str, bytes]:
        self._fill(5)
        kind, length = _HDR.unpack_from(self._buf, self._pos)
        if length < 4 or length > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"bad message length {length} for type {kind!r}")
        self._fill(1 + length)
        start = self._pos + 5
        end = self._pos + 1 + length
        payload = bytes(self._buf[start:end])
        self._pos = end
        return kind.decode("ascii", "replace"), payload

    def read_message(self) -> tuple[str, bytes]:
        """Next message that is not asynchronous; notices, parameter changes and notifications
        are absorbed into ``notices``, ``parameters`` and ``notifications`` on the way."""
        while True:
            kind, payload = self._read_raw()
            if kind == "N":
                self.notices.append(parse_fields(payload))
            elif kind == "S":
                name, _, rest = payload.partition(b"\x00")
                value = rest.split(b"\x00", 1)[0]
                key = name.decode("utf-8", "replace")
                self.parameters[key] = value.decode("utf-8", "replace")
                if key == "client_encoding":
                    self._encoding = _python_encoding(self.parameters[key])
            elif kind == "A":
                pid = _I32.unpack_from(payload)[0]
                channel, _, rest = payload[4:].partition(b"\x00")
                text = rest.split(b"\x00", 1)[0]
                self.notifications.append((pid, channel.decode(self._encoding), text.decode(self._encoding)))
            else:
                return kind, payload

    # -- writing ---------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionClosed("session is closed")
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.closed = True
            raise ConnectionClosed(f"sending failed: {exc}") from None

    # -- result collection -----------------------------------------------------

    def _row_description(self, payload: bytes) -> list[str]:
        count = _I16.unpack_from(payload)[0]
        names: list[str] = []
        pos = 2
        for _ in range(count):
            end = payload.index(b"\x00", pos)
            names.append(payload[pos:end].decode(self._encoding))
            pos = end + 1 + 18  # table oid, attnum, type oid, typlen, typmod, format
        return names

    def _data_row(self, payload: bytes) -> tuple[str | None, ...]:
        count = _I16.unpack_from(payload)[0]
        pos = 2
        values: list[str | None] = []
        for _ in range(count):
            size = _I32.unpack_from(payload, pos)[0]
            pos += 4
            if size < 0:
                values.append(None)
            else:
                values.append(payload[pos : pos + size].decode(self._encoding))
                pos += size
        return tuple(values)

    def _collect(self) -> list[Result]:
        """Read replies up to ReadyForQuery; raise the first ErrorResponse only after it,
        so the session is back in a known state when the caller sees the error."""
        results: list[Result] = []
        current = Result()
        error: PgError | None = None
        while True:
            try:
                kind, payload = self.read_message()
            except ConnectionClosed:
                if error is not None:
                    raise error from None
                raise
            if kind == "Z":
                self.tx_status = payload[:1].decode("ascii")
                if error is not None:
                    raise error
                return results
            if kind == "E":
                err = PgError(parse_fields(payload))
                if err.fatal:
                    # The server closes the session after a FATAL error; no ReadyForQuery follows.
                    self.closed = True
                    self._close_socket()
                    raise err
                error = error or err
            elif kind == "T":
                current.columns = self._row_description(payload)
            elif kind == "D":
                current.rows.append(self._data_row(payload))
            elif kind == "C":
                current.command = payload.rstrip(b"\x00").decode(self._encoding)
                results.append(current)
                current = Result()
            elif kind in ("I", "s"):  # EmptyQueryResponse; PortalSuspended (never: no row limit)
                results.append(current)
                current = Result()
            elif kind == "G":  # CopyInResponse: refuse, the server then errors and syncs
                self._send(_message(b"f", _cstr("COPY FROM STDIN is not supported", self._encoding)))
            elif kind in ("1", "2", "3", "n", "t", "H", "d", "c", "K"):
                pass  # ParseComplete, BindComplete, CloseComplete, NoData, ParameterDescription, copy out
            else:
                raise ProtocolError(f"unexpected message {kind!r} from the server")

    # -- public API ------------------------------------------------------------

    def simple_query(self, sql: str) -> list[Result]:
        """Run one or more ;-separated statements with the simple protocol; one Result each."""
        self._send(_message(b"Q", _cstr(sql, self._encoding)))
        return self._collect()

    def query(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement with ``$1..$n`` parameters via the extended protocol, in one
        round trip (unnamed statement and portal, text format both ways)."""
        enc = self._encoding
        values = [encode_param(v) for v in params]
        bind = bytearray(b"\x00\x00")  # portal "", statement ""
        bind += _I16.pack(0)  # no parameter format codes: all text
        bind += _I16.pack(len(values))
        for v in values:
            if v is None:
                bind += _I32.pack(-1)
            else:
                data = v.encode(enc)
                bind += _I32.pack(len(data)) + data
        bind += _I16.pack(0)  # result columns: all text
        out = bytearray()
        out += _message(b"P", b"\x00" + _cstr(sql, enc) + _I16.pack(0))
        out += _message(b"B", bytes(bind))
        out += _message(b"D", b"P\x00")
        out += _message(b"E", b"\x00" + _I32.pack(0))
        out += _SYNC
        self._send(bytes(out))
        results = self._collect()
        return results[-1] if results else Result()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Alias of ``query`` for statements run for their effect."""
        return self.query(sql, params)

    def sync(self) -> str:
        """A Sync round trip; returns the transaction status. Also a cheap liveness check."""
        self._send(_SYNC)
        self._collect()
        return self.tx_status

    def begin(self) -> None:
        self.simple_query("BEGIN")

    def commit(self) -> None:
        results = self.simple_query("COMMIT")
        # COMMIT of a failed transaction answers ROLLBACK instead of an error.
        if results and results[-1].command == "ROLLBACK":
            raise PgWireError("transaction was rolled back at COMMIT (it had failed)")

    def rollback(self) -> None:
        self.simple_query("ROLLBACK")

    def cancel_request(self) -> bytes:
        """The CancelRequest packet for this session (send it on a *new* connection to the server)."""
        if self.backend_pid is None or self.secret_key is None:
            raise PgWireError("no backend key data for this session")
        return struct.pack("!iiii", 16, 80877102, self.backend_pid, self.secret_key)

    def _close_socket(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def close(self) -> None:
        """Terminate the session politely and close the socket (idempotent)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.sendall(_TERMINATE)
        self._close_socket()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
