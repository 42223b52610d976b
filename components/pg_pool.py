"""Authenticated PostgreSQL sessions for the pool manager (pool ``"kind": "postgres"``).

The manager calls ``open_session(config)`` in a worker thread to get a socket whose session has
completed startup and SCRAM authentication and sits at ReadyForQuery, plus the ``meta`` dict
for the acquire reply, and ``check_session(sock)`` right before handing it out (a worker
thread too: past ``idle_check_s`` it does a protocol round trip). ``quick_check(sock)`` is its
non-blocking part, safe on an event loop; ``session_meta(sock)`` is the meta as updated by
the checks (a ParameterStatus that arrived while the session sat idle).

The handshake is done by pg8000 (imported lazily: the echo pools never pay for it) on a socket
this module creates and keeps: pg8000's ``sock=`` argument. pg8000 normally reads through a
buffered file object; here it gets an exact-length reader instead, so no byte beyond
ReadyForQuery can be stranded in a Python buffer when the driver object is dropped and the
bare socket is handed on. Credentials stay in this process: ``meta`` carries server parameters,
backend key data, database and role only.

PostgreSQL over TLS (``"sslmode": "verify-full"`` with ``ca_file`` and ``server_name``): an
SSLRequest, a TLS 1.3 handshake verifying the server (``components.tls_pool.client_handshake``,
fed one record at a time so nothing past the handshake is consumed), then startup and SCRAM
through this process's record layer (``components.tls13``). The session is then handed on as
the ``tls`` kind hands its sessions (``components.tls_pool``): kernel TLS, the traffic keys
for the caller's record layer, or a relay that keeps the keys here (the pool's ``handoff``).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_HDR = struct.Struct("!ci")
_I32 = struct.Struct("!i")
_EMPTY_QUERY = b"Q\x00\x00\x00\x05\x00"

DEFAULT_PORT = 5432
DEFAULT_CONNECT_TIMEOUT_S = 5.0
# Like PgBouncer's server_check_delay: a session idle longer than this gets a protocol round
# trip before hand-out; younger ones only get the non-blocking peek.
DEFAULT_IDLE_CHECK_S = 30.0
DEFAULT_CHECK_TIMEOUT_S = 1.0
DEFAULT_APPLICATION_NAME = "coldstart-cpm"
SSLMODES = ("disable", "verify-full")

# Authentication request codes (AuthenticationXXX 'R' messages).
AUTH_OK = 0
AUTH_SASL = 10


class PgSessionError(Exception):
    """Opening an authenticated session failed; the message says where and why."""

    def __init__(self, message: str, sqlstate: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        # The server refused the login itself (credentials, role, database): the manager waits its
        # login_retry before the next attempt instead of retrying at connect-backoff pace.
        self.login_refused = sqlstate.startswith("28") or sqlstate == "3D000"


# -- exact-length stream for pg8000 ---------------------------------------------------


@dataclass
class HandshakeTrace:
    """Wall-clock points (time.perf_counter_ns) of the startup exchange as seen on the wire."""

    t_first_write_ns: int = 0  # StartupMessage sent
    t_first_reply_ns: int = 0  # first server message (AuthenticationSASL, or Ok under trust)
    t_auth_ok_ns: int = 0  # AuthenticationOk received
    t_ready_ns: int = 0  # ReadyForQuery received
    auth_method: int = -1  # code of the first authentication request
    messages: list[str] = field(default_factory=list)

    @property
    def startup_us(self) -> float:
        """Startup work that is not authentication: StartupMessage → first reply, and
        AuthenticationOk → ReadyForQuery (backend initialisation, parameters, key data)."""
        if not (self.t_first_write_ns and self.t_ready_ns):
            return float("nan")
        return ((self.t_first_reply_ns - self.t_first_write_ns) + (self.t_ready_ns - self.t_auth_ok_ns)) / 1e3

    @property
    def auth_us(self) -> float:
        """First authentication request → AuthenticationOk (the SASL exchange incl. PBKDF2)."""
        if not (self.t_first_reply_ns and self.t_auth_ok_ns):
            return float("nan")
        return (self.t_auth_ok_ns - self.t_first_reply_ns) / 1e3


class _Stream:
    """What pg8000 gets from ``makefile()``: exact reads (no read-ahead), buffered writes
    flushed as one send, and a message tracer that timestamps the startup exchange."""

    def __init__(self, sock: socket.socket, trace: HandshakeTrace) -> None:
        self._sock = sock
        self._out = bytearray()
        self._rx = bytearray()
        self.trace = trace
        self.tracing = True

    def read(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if self.tracing and data:
            self._observe(data)
        return data

    def write(self, data: bytes) -> int:
        self._out += data
        return len(data)

    def flush(self) -> None:
        if self._out:
            if self.tracing and not self.trace.t_first_write_ns:
                self.trace.t_first_write_ns = time.perf_counter_ns()
            self._sock.sendall(self._out)
            self._out.clear()

    def close(self) -> None:
        self._out.clear()

    def _observe(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        rx = self._rx
        rx += data
        while len(rx) >= 5:
            kind, length = _HDR.unpack_from(rx)
            if len(rx) < 1 + length:
                break
            body = bytes(rx[5 : 1 + length])
            del rx[: 1 + length]
            code = kind.decode("ascii", "replace")
            tr = self.trace
            tr.messages.append(code)
            if not tr.t_first_reply_ns:
                tr.t_first_reply_ns = now
            if code == "R" and len(body) >= 4:
                auth = _I32.unpack_from(body)[0]
                if tr.auth_method < 0:
                    tr.auth_method = auth
                if auth == AUTH_OK:
                    tr.t_auth_ok_ns = now
            elif code == "Z":
                tr.t_ready_ns = now
                self.tracing = False
                self._rx.clear()
                return


class _TracedSocket(socket.socket):
    """A socket whose ``makefile()`` is the exact-length tracing stream (pg8000 calls it once)."""

    stream: _Stream

    def makefile(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.stream


class _StreamHolder:
    """What pg8000 gets as ``sock=`` when the bytes go through a TLS layer: only ``makefile``."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream

    def makefile(self, *args: Any, **kwargs: Any) -> _Stream:
        return self.stream

    def close(self) -> None:
        pass


def traced_handshake_over(
    transport: Any,
    *,
    user: str,
    password: str | None,
    database: str | None,
    application_name: str | None = DEFAULT_APPLICATION_NAME,
    startup_params: dict[str, str] | None = None,
) -> tuple[Any, HandshakeTrace]:
    """pg8000's startup + authentication over ``transport`` (anything with ``recv``/``sendall``:
    an ``ssl.SSLSocket``, a ``tls13.TLSSession``). Returns the connection, already detached from
    the transport (pg8000 holds nothing to close), and the wire trace."""
    import pg8000.native

    trace = HandshakeTrace()
    conn = pg8000.native.Connection(
        user,
        password=password,
        database=database,
        application_name=application_name,
        startup_params=startup_params,
        sock=_StreamHolder(_Stream(transport, trace)),
        ssl_context=False,  # the caller did the SSLRequest and the TLS handshake
    )
    conn._sock = None
    conn._usock = None
    return conn, trace


SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def ssl_request(sock: socket.socket) -> None:
    """Ask the server to switch to TLS; raises PgSessionError unless it agrees ('S')."""
    sock.sendall(SSL_REQUEST)
    answer = sock.recv(1)
    if answer != b"S":
        what = "closed the connection" if not answer else f"answered {answer!r}"
        raise PgSessionError(f"the server refused TLS (SSLRequest {what}): is ssl = on?")


def traced_handshake(
    sock: socket.socket,
    *,
    user: str,
    password: str | None,
    database: str | None,
    application_name: str | None = DEFAULT_APPLICATION_NAME,
    startup_params: dict[str, str] | None = None,
    connection_class: Callable[..., Any] | None = None,
) -> tuple[Any, HandshakeTrace, socket.socket]:
    """Run pg8000's startup + authentication over the already-connected ``sock``.

    Returns the pg8000 connection (still usable as a driver), the wire trace, and the
    socket object pg8000 talks through (``sock`` is detached into it). Raises pg8000's
    own exceptions on failure; the socket is closed then.
    """
    if connection_class is None:
        import pg8000.native  # lazy: only postgres pools and the direct function need it

        connection_class = pg8000.native.Connection
    trace = HandshakeTrace()
    timeout = sock.gettimeout()
    traced = _TracedSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    traced.settimeout(timeout)  # a socket made from a fileno does not inherit the timeout
    traced.stream = _Stream(traced, trace)
    try:
        conn = connection_class(
            user,
            password=password,
            database=database,
            application_name=application_name,
            startup_params=startup_params,
            sock=traced,
            ssl_context=False,  # no SSLRequest round trip: TLS cannot be injected anyway
        )
    except BaseException:
        traced.close()
        raise
    return conn, trace, traced


def _take_socket(conn: Any, traced: socket.socket) -> socket.socket:
    """Take the bare socket from a pg8000 connection at ReadyForQuery, without Terminate."""
    # pg8000 closes (and sends Terminate) only from close(); with these cleared it holds nothing.
    conn._sock = None
    conn._usock = None
    timeout = traced.gettimeout()
    plain = socket.socket(traced.family, traced.type, traced.proto, fileno=traced.detach())
    plain.settimeout(timeout)
    return plain


# -- configuration -----------------------------------------------------------------------


@dataclass
class PgPoolConfig:
    host: str
    port: int
    user: str
    password: str | None
    database: str
    application_name: str = DEFAULT_APPLICATION_NAME
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    idle_check_s: float = DEFAULT_IDLE_CHECK_S
    check_timeout_s: float = DEFAULT_CHECK_TIMEOUT_S
    startup_params: dict[str, str] = field(default_factory=dict)
    init_sql: list[str] = field(default_factory=list)
    tls: Any = None  # components.tls_pool.TlsPoolConfig when sslmode is verify-full

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def _split_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep:
        return target, DEFAULT_PORT
    return host.strip("[]"), int(port)


def parse_config(config: dict[str, Any]) -> PgPoolConfig:
    """Validate a pool's JSON config. Raises PgSessionError with a readable message."""
    try:
        if "target" in config:
            host, port = _split_target(str(config["target"]))
        else:
            host, port = str(config["host"]), int(config.get("port", DEFAULT_PORT))
        user = str(config["user"])
    except KeyError as exc:
        raise PgSessionError(f"postgres pool config needs {exc.args[0]!r}") from None
    except ValueError as exc:
        raise PgSessionError(f"postgres pool config: bad target/port: {exc}") from None
    sslmode = config.get("sslmode") or ("verify-full" if config.get("ssl") else "disable")
    if sslmode not in SSLMODES:
        raise PgSessionError(
            f"postgres pool: sslmode must be disable or verify-full (TLS 1.3, server verified), got {sslmode!r}"
        )
    tls_cfg = None
    if sslmode == "verify-full":
        from components import tls_pool

        try:
            tls_cfg = tls_pool.parse_config({**config, "target": f"{host}:{port}"})
        except tls_pool.TlsSessionError as exc:
            raise PgSessionError(f"postgres pool: {exc}".replace("tls pool config: ", "")) from None
    password: str | None
    if config.get("password_file"):
        path = str(config["password_file"])
        try:
            with open(path, encoding="utf-8") as fh:
                password = fh.read().rstrip("\r\n")
        except OSError as exc:
            raise PgSessionError(f"postgres pool: cannot read password_file {path}: {exc.strerror}") from None
    elif config.get("password_env"):
        name = str(config["password_env"])
        if name not in os.environ:
            raise PgSessionError(f"postgres pool: environment variable {name} (password_env) is not set")
        password = os.environ[name]
    else:
        password = config.get("password")
    startup = {str(k): str(v) for k, v in (config.get("startup_params") or {}).items()}
    # The adopting client decodes text as UTF-8 unless told otherwise; pin it.
    startup.setdefault("client_encoding", "UTF8")
    init_sql = config.get("init_sql") or []
    if isinstance(init_sql, str):
        init_sql = [init_sql]
    return PgPoolConfig(
        host=host,
        port=port,
        user=user,
        password=password,
        database=str(config.get("database") or user),
        application_name=str(config.get("application_name") or DEFAULT_APPLICATION_NAME),
        connect_timeout_s=float(config.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT_S)),
        idle_check_s=float(config.get("idle_check_s", DEFAULT_IDLE_CHECK_S)),
        check_timeout_s=float(config.get("check_timeout", DEFAULT_CHECK_TIMEOUT_S)),
        startup_params=startup,
        init_sql=[str(s) for s in init_sql],
        tls=tls_cfg,
    )


# -- sessions ----------------------------------------------------------------------------


@dataclass
class _SessionState:
    idle_check_s: float
    check_timeout_s: float
    last_ok: float  # time.monotonic() of the last proof the session was alive
    meta: dict[str, Any]
    tls: bool = False  # the session runs over TLS (its records are tracked by tls_pool)


# Keyed by the socket object handed to the manager; a socket we do not know is checked fully.
# The manager calls in from several worker threads, hence the lock.
_SESSIONS: weakref.WeakKeyDictionary[socket.socket, _SessionState] = weakref.WeakKeyDictionary()
_SESSIONS_LOCK = threading.Lock()


def _state(sock: socket.socket) -> _SessionState | None:
    with _SESSIONS_LOCK:
        return _SESSIONS.get(sock)


def _describe_error(exc: BaseException) -> tuple[str, str]:
    """(sqlstate, readable text) from a pg8000 DatabaseError's field dict, or the exception."""
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, dict):
        code = str(arg.get("C", ""))
        text = f"{arg.get('S', 'ERROR')} {code}: {arg.get('M', '')}".strip()
        return code, text
    return "", f"{type(exc).__name__}: {exc}"


def open_session(config: dict[str, Any]) -> tuple[socket.socket, dict[str, Any]]:
    """Connect, start up and authenticate one session; return it at ReadyForQuery (blocking
    mode, TCP_NODELAY and keepalive set) with the meta for the acquire reply."""
    cfg = parse_config(config)
    t0 = time.perf_counter_ns()
    try:
        sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout_s)
    except OSError as exc:
        raise PgSessionError(f"postgres {cfg.host}:{cfg.port}: cannot connect: {exc}") from None
    t_tcp = time.perf_counter_ns()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # The timeout bounds the whole handshake; it is cleared below so the fd leaves blocking.
    sock.settimeout(cfg.connect_timeout_s)
    if cfg.tls is not None:
        return _open_tls_session(cfg, sock, t0, t_tcp)
    try:
        conn, trace, traced = traced_handshake(
            sock,
            user=cfg.user,
            password=cfg.password,
            database=cfg.database,
            application_name=cfg.application_name,
            startup_params=cfg.startup_params,
        )
    except Exception as exc:
        code, text = _describe_error(exc)
        hint = ""
        if code in ("28P01", "28000"):
            hint = " (check user/password in the pool config and pg_hba.conf)"
        elif code == "3D000":
            hint = " (database does not exist)"
        raise PgSessionError(f"postgres startup failed for {cfg.where}: {text}{hint}", code) from None
    try:
        for sql in cfg.init_sql:
            conn.run(sql)
        if conn._transaction_status not in (None, b"I"):
            raise PgSessionError(f"postgres {cfg.where}: init_sql left a transaction open")
        key = conn._backend_key_data or b""
        pid, secret = struct.unpack("!ii", key[:8]) if len(key) >= 8 else (None, None)
        params = dict(conn.parameter_statuses)
        plain = _take_socket(conn, traced)
    except Exception as exc:
        traced.close()
        if isinstance(exc, PgSessionError):
            raise
        code, text = _describe_error(exc)
        raise PgSessionError(f"postgres {cfg.where}: session setup failed: {text}", code) from None
    plain.settimeout(None)  # blocking, O_NONBLOCK cleared: the flag would travel with the fd
    t_ready = time.perf_counter_ns()
    meta = _session_meta(
        cfg,
        pid,
        secret,
        params,
        setup_us={
            "tcp": round((t_tcp - t0) / 1e3, 1),
            "startup": round(trace.startup_us, 1),
            "auth": round(trace.auth_us, 1),
            "total": round((t_ready - t0) / 1e3, 1),
        },
    )
    with _SESSIONS_LOCK:
        _SESSIONS[plain] = _SessionState(cfg.idle_check_s, cfg.check_timeout_s, time.monotonic(), meta)
    return plain, meta


def _session_meta(
    cfg: PgPoolConfig, pid: Any, secret: Any, params: dict[Any, Any], *, setup_us: dict[str, float], **extra: Any
) -> dict[str, Any]:
    """What a pooled session's hand-out carries, alike for plain and TLS sessions (`extra`: the TLS part)."""
    return {
        "kind": "postgres",
        "protocol": "3.0",
        "database": cfg.database,
        "role": cfg.user,
        "server": f"{cfg.host}:{cfg.port}",
        "backend_pid": pid,
        "secret_key": secret,
        "parameters": {_text(k): _text(v) for k, v in params.items()},
        "tx_status": "I",
        "opened_ns": time.time_ns(),
        **extra,
        "setup_us": setup_us,
    }


def _open_tls_session(
    cfg: PgPoolConfig, sock: socket.socket, t0: int, t_tcp: int
) -> tuple[socket.socket, dict[str, Any]]:
    """SSLRequest, verified TLS 1.3 handshake, startup and SCRAM through our record layer; the
    session is registered with ``tls_pool`` for the hand-out (keys, kernel TLS or relay)."""
    import ssl

    from components import tls13, tls_pool

    try:
        ssl_request(sock)
        t_ssl = time.perf_counter_ns()
        hs = tls_pool.client_handshake(sock, tls_pool.client_context(cfg.tls), cfg.tls.server_name)
        t_tls = time.perf_counter_ns()
        session = tls13.TLSSession(sock, tls13.SessionParams(hs.suite, hs.server_secret, hs.client_secret))
        conn, trace = traced_handshake_over(
            session,
            user=cfg.user,
            password=cfg.password,
            database=cfg.database,
            application_name=cfg.application_name,
            startup_params=cfg.startup_params,
        )
        for sql in cfg.init_sql:
            conn.run(sql)
        if conn._transaction_status not in (None, b"I"):
            raise PgSessionError(f"postgres {cfg.where}: init_sql left a transaction open")
        if session._raw or session._plain:
            raise PgSessionError(f"postgres {cfg.where}: bytes past ReadyForQuery during the TLS startup")
    except PgSessionError:
        sock.close()
        raise
    except (tls_pool.TlsSessionError, ssl.SSLError, tls13.TLSError, OSError) as exc:
        sock.close()
        raise PgSessionError(f"postgres {cfg.where}: TLS failed: {exc}") from None
    except Exception as exc:
        sock.close()
        code, text = _describe_error(exc)
        hint = " (check user/password in the pool config and pg_hba.conf)" if code in ("28P01", "28000") else ""
        raise PgSessionError(f"postgres startup over TLS failed for {cfg.where}: {text}{hint}", code) from None
    key = conn._backend_key_data or b""
    pid, secret = struct.unpack("!ii", key[:8]) if len(key) >= 8 else (None, None)
    params = dict(conn.parameter_statuses)
    sock.settimeout(None)  # blocking: the flag would travel with the fd
    session.sock = weakref.proxy(sock)  # type: ignore[assignment]  # the registry holds the socket weakly
    t_ready = time.perf_counter_ns()
    meta = _session_meta(
        cfg,
        pid,
        secret,
        params,
        tls={
            "version": hs.version,
            "cipher_suite": hs.suite.name,
            "peer_verified": True,
            "peer_subject": hs.peer_cert_subject,
            "client_cert": bool(cfg.tls.cert_file),
        },
        setup_us={
            "tcp": round((t_tcp - t0) / 1e3, 1),
            "tls": round((t_tls - t_ssl) / 1e3, 1),
            "startup": round(trace.startup_us, 1),
            "auth": round(trace.auth_us, 1),
            "total": round((t_ready - t0) / 1e3, 1),
        },
    )
    tls_pool.register_session(sock, session, meta, cfg.tls)
    with _SESSIONS_LOCK:
        _SESSIONS[sock] = _SessionState(cfg.idle_check_s, cfg.check_timeout_s, time.monotonic(), meta, tls=True)
    return sock, meta


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)


# -- health check ------------------------------------------------------------------------


class _Dead(Exception):
    pass


def _recv_exact_nowait(sock: socket.socket, size: int, deadline: float) -> bytes:
    """Read exactly ``size`` bytes (never more: the rest belongs to whoever gets the fd),
    waiting with poll until ``deadline`` without touching the fd's blocking flag."""
    buf = bytearray()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while len(buf) < size:
        try:
            chunk = sock.recv(size - len(buf), socket.MSG_DONTWAIT)
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Dead("no reply in time") from None
            poller.poll(max(1, int(left * 1000)))
            continue
        except OSError as exc:
            raise _Dead(str(exc)) from None
        if not chunk:
            raise _Dead("EOF")
        buf += chunk
    return bytes(buf)


def _read_message(sock: socket.socket, deadline: float) -> tuple[str, bytes]:
    kind, length = _HDR.unpack(_recv_exact_nowait(sock, 5, deadline))
    if length < 4 or length > 1 << 20:
        raise _Dead(f"bad message length {length}")
    return kind.decode("ascii", "replace"), _recv_exact_nowait(sock, length - 4, deadline)


def _apply_async(kind: str, body: bytes, state: _SessionState | None) -> None:
    """Absorb a NoticeResponse, and a ParameterStatus into the session's meta (the manager
    re-reads it with ``session_meta`` before hand-out). Anything else makes the session unfit,
    and so does a ParameterStatus on a session whose meta we do not hold: the receiver would
    trust a stale one."""
    if kind == "N":
        return
    if kind == "S" and state is not None:
        name, _, rest = body.partition(b"\x00")
        with _SESSIONS_LOCK:
            state.meta.setdefault("parameters", {})[_text(name)] = _text(rest.split(b"\x00", 1)[0])
        return
    raise _Dead(f"unsolicited message {kind!r} on an idle session")


def _peek_pending(sock: socket.socket) -> bytes | None:
    """Bytes waiting on the socket (b'' = EOF), or None when nothing is pending."""
    try:
        return sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise _Dead(str(exc)) from None


def _round_trip(sock: socket.socket, deadline: float, state: _SessionState | None) -> None:
    """Send an empty simple query and read up to its ReadyForQuery, which must say idle.

    Not a bare Sync: an empty query starts (and ends) a transaction command, so the backend
    also absorbs the catalog invalidations it accumulated while idle (autovacuum/analyze of
    busy tables send them); otherwise the receiver's first query pays for that."""
    try:
        sock.send(_EMPTY_QUERY, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
    except OSError as exc:
        raise _Dead(str(exc)) from None
    while True:
        kind, body = _read_message(sock, deadline)
        if kind == "Z":
            if body[:1] != b"I":
                raise _Dead(f"session not idle (status {body[:1]!r})")
            return
        if kind == "E":
            raise _Dead("ErrorResponse")
        if kind == "I":  # EmptyQueryResponse
            continue
        _apply_async(kind, body, state)


def check_session(sock: socket.socket) -> bool:
    """True iff the session may be handed out: not closed or reset by the server, no
    ErrorResponse pending (pg_terminate_backend sends FATAL 57P01 before closing), and, when
    idle past ``idle_check_s`` (or unknown to this module), alive on a round trip (an empty query)."""
    if sock.fileno() < 0:
        return False
    if sock.gettimeout() is not None:
        # A Python-level timeout would turn the non-blocking peek into a wait; hand-out needs
        # blocking mode anyway (the O_NONBLOCK flag travels with the fd).
        sock.settimeout(None)
    state = _state(sock)
    if state is not None and state.tls:
        return _check_tls_session(sock, state)
    timeout = state.check_timeout_s if state else DEFAULT_CHECK_TIMEOUT_S
    deadline = time.monotonic() + timeout
    try:
        pending = _peek_pending(sock)
        if pending == b"":
            return False
        needs_round_trip = state is None or time.monotonic() - state.last_ok >= state.idle_check_s
        if pending is not None:
            if pending[:1] == b"E":
                return False
            # Consume complete asynchronous messages; a partial one gets the round trip.
            while pending:
                if len(pending) < 5:
                    needs_round_trip = True
                    break
                kind, length = _HDR.unpack_from(pending)
                if len(pending) < 1 + length:
                    needs_round_trip = True
                    break
                if kind == b"E":
                    return False
                k, body = _read_message(sock, deadline)
                _apply_async(k, body, state)
                pending = pending[1 + length :]
        if needs_round_trip:
            _round_trip(sock, deadline, state)
    except _Dead:
        return False
    if state is not None:
        state.last_ok = time.monotonic()
    return True


def _check_tls_session(sock: socket.socket, state: _SessionState) -> bool:
    """A TLS session: complete records that arrived are consumed (tickets, KeyUpdate; an alert or
    close_notify makes it unfit), any PostgreSQL message that arrived while idle makes it unfit, and
    past ``idle_check_s`` an empty query goes round through the record layer."""
    from components import tls_pool

    if not tls_pool.check_session(sock):
        return False
    tls_state = tls_pool._state(sock)
    if tls_state is None:
        return False
    session = tls_state.session
    if session._plain or session._raw:
        return False
    if time.monotonic() - state.last_ok >= state.idle_check_s:
        with tls_state.lock:
            try:
                sock.settimeout(state.check_timeout_s)
                session.sendall(_EMPTY_QUERY)
                buf = b""
                while True:
                    while len(buf) < 5 or len(buf) < 1 + _HDR.unpack_from(buf)[1]:
                        chunk = session.recv(65536)
                        if not chunk:
                            return False
                        buf += chunk
                    kind, length = _HDR.unpack_from(buf)
                    body, buf = buf[5 : 1 + length], buf[1 + length :]
                    if kind == b"Z":
                        if body[:1] != b"I" or buf or session._plain or session._raw:
                            return False
                        break
                    if kind == b"E" or kind not in (b"I", b"N"):
                        return False
            except Exception:
                return False
            finally:
                with contextlib.suppress(OSError):
                    sock.settimeout(None)
    state.last_ok = time.monotonic()
    return True


def prepare_handout(sock: socket.socket, session: Any = None, relay: bool = False) -> dict[str, Any] | None:
    """A TLS session's hand-out meta (``tls_pool.prepare_handout``: keys, kernel TLS or none for a
    relay); None for a plain session (its meta is already in the reply)."""
    state = _state(sock)
    if state is None or not state.tls:
        return None
    from components import tls_pool

    return tls_pool.prepare_handout(sock, session, relay=relay)


def relay_codec(sock: socket.socket) -> Any:
    """The relay codec of a TLS session (the manager keeps the keys); None for a plain session."""
    state = _state(sock)
    if state is None or not state.tls:
        return None
    from components import tls_pool

    return tls_pool.relay_codec(sock)


def resolve_handoff(config: dict[str, Any]) -> str:
    """How a plain acquire gets its session: ``relay``, or ``inject`` (the fd; over TLS kernel TLS
    or the record layer, ``components.tls_pool.choose_handoff``)."""
    try:
        cfg = parse_config(config)
    except PgSessionError:
        return "relay" if config.get("handoff") == "relay" else "inject"  # the open reports the error
    if cfg.tls is None:
        if config.get("handoff") not in (None, "inject", "relay"):
            raise PgSessionError("postgres pool: handoff ktls/record/auto needs sslmode verify-full")
        return "relay" if config.get("handoff") == "relay" else "inject"
    from components import tls_pool

    return tls_pool.choose_handoff(cfg.tls.handoff, cfg.tls.fallback)


def quick_check(sock: socket.socket) -> bool | None:
    """The non-blocking part of ``check_session``, cheap enough for an event loop: False = dead
    (EOF, reset, ErrorResponse pending), True = fine and recently proven alive, None = needs the
    full ``check_session`` (in a worker thread: it may do a round trip)."""
    if sock.fileno() < 0:
        return False
    state = _state(sock)
    try:
        pending = _peek_pending(sock)
    except _Dead:
        return False
    if pending == b"" or (pending is not None and pending[:1] == b"E"):
        return False
    if pending is not None or state is None or sock.gettimeout() is not None:
        return None
    if time.monotonic() - state.last_ok >= state.idle_check_s:
        return None
    return True


def session_meta(sock: socket.socket) -> dict[str, Any] | None:
    """The (live-updated) meta dict of a session opened here, or None."""
    state = _state(sock)
    return state.meta if state else None


def close_session(sock: socket.socket) -> None:
    """Terminate politely and close (for a manager discarding a session it still holds)."""
    state = _state(sock)
    if state is not None and state.tls:
        from components import tls_pool

        tls_state = tls_pool._state(sock)
        if tls_state is not None:
            with contextlib.suppress(Exception):
                sock.setblocking(False)
                tls_state.session.sendall(b"X\x00\x00\x00\x04")
        with _SESSIONS_LOCK:
            _SESSIONS.pop(sock, None)
        tls_pool.close_session(sock)
        return
    with contextlib.suppress(OSError):
        sock.send(b"X\x00\x00\x00\x04", socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
    with _SESSIONS_LOCK:
        _SESSIONS.pop(sock, None)
    sock.close()
