"""TLS 1.3 sessions for the pool manager (pool ``"kind": "tls"``): handshaken here, continued by the caller.

``open_session(config)`` (a worker thread) connects to ``target``, verifies the server
(``ca_file``, ``server_name``; optional ``cert_file``/``key_file`` for mutual TLS) and completes
the handshake with OpenSSL (Python's ``ssl``) driven through ``ssl.MemoryBIO``, fed exactly one
TLS record at a time from the socket: OpenSSL never consumes a byte past the handshake, so the
socket holds exactly what a continuing peer must read next. The application traffic secrets come
from the context's key log (``keylog_filename``), written to an anonymous memory file
(``memfd``; a private 0600 temporary file, unlinked at once, where memfd is unavailable) that is
read and closed as soon as the handshake is done. From then on this module's own record layer
(``components.tls13``) tracks the session: post-handshake records that arrive while the session
sits in the pool (NewSessionTicket, KeyUpdate, an alert) are consumed and counted, so both
sequence numbers are exact at hand-out.

``prepare_handout(sock, session)`` (the manager's hand-out hook, on its event loop, non-blocking)
consumes the complete records that arrived and returns the acquire reply's meta with ``meta.tls``:
version, cipher suite, both traffic secrets (hex), both sequence numbers, and any application
bytes already decrypted. Only this meta carries secrets: the meta returned by ``open_session``
and ``session_meta`` (logged, kept for the pool) has none. The session state holds the socket
only weakly and disappears with the socket once the manager closes its copy after hand-out.

How a session reaches its caller is the pool's ``handoff`` (``choose_handoff``):

- ``ktls``: the keys are installed into the socket (TLS_TX/TLS_RX, the kernel's ``tls`` ULP) just
  before hand-out; the caller reads and writes plaintext on the TCP fd (``meta.tls.path`` ktls).
- ``record``: the fd goes with the traffic keys and sequence numbers; the caller continues the
  session with its own record layer (``components.tls13``; path ``record_layer``).
- ``relay``: the keys never leave the manager: the caller gets one end of an AF_UNIX socketpair
  carrying plaintext and the manager's relay seals and opens the records (``relay_codec``; path
  ``relay``). For kernels without kernel TLS and sandboxes that drop TCP fds.
- ``auto``: ``ktls`` where /proc/sys/net/ipv4/tcp_available_ulp lists ``tls``, else ``fallback``
  (``record``, the default, or ``relay``).

An acquire that asks for ``"handoff": "relay"`` is relayed whatever the pool's setting; one that
asks for ``"inject"`` gets the fd (kernel TLS where possible, else the record layer).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from components import tls13
from components.protocol import split_hostport

DEFAULT_CONNECT_TIMEOUT_S = 5.0
# After the handshake, wait this long for the server's first post-handshake record (OpenSSL
# servers send their session tickets at once) so a server that rejects us (mutual TLS) is a
# failed open, not a session discarded at hand-out.
DEFAULT_POST_HANDSHAKE_WAIT_S = 0.2
KEYLOG_LABELS = ("CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0")
KTLS_MODES = ("auto", "on", "off")
# The pool's "handoff" for TLS sessions; "inject" (every pool's default) keeps the older "ktls" key's meaning.
TLS_HANDOFFS = ("ktls", "record", "relay", "auto")
TLS_FALLBACKS = ("record", "relay")
KTLS, RECORD, RELAY = "ktls", "record", "relay"


class TlsSessionError(Exception):
    """Opening a TLS session failed; the message says where and why (never a secret)."""


# -- configuration -----------------------------------------------------------------------


@dataclass
class TlsPoolConfig:
    host: str
    port: int
    server_name: str
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    post_handshake_wait_s: float = DEFAULT_POST_HANDSHAKE_WAIT_S
    ktls: str = "auto"
    handoff: str = "auto"  # one of TLS_HANDOFFS
    fallback: str = RECORD  # what "auto" means without kernel TLS

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port} ({self.server_name})"


def parse_config(config: dict[str, Any]) -> TlsPoolConfig:
    """Validate a pool's JSON config. Raises TlsSessionError with a readable message."""
    try:
        host, port = split_hostport(str(config["target"]))
    except KeyError:
        raise TlsSessionError("tls pool config needs 'target' HOST:PORT") from None
    except ValueError as exc:
        raise TlsSessionError(f"tls pool config: {exc}") from None
    ca_file = config.get("ca_file")
    cert_file, key_file = config.get("cert_file"), config.get("key_file")
    for key, path in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
        if path is not None and not os.path.isfile(str(path)):
            raise TlsSessionError(f"tls pool config: {key} {path} is not a readable file")
    if key_file and not cert_file:
        raise TlsSessionError("tls pool config: key_file given without cert_file")
    ktls = str(config.get("ktls", "auto"))
    if ktls not in KTLS_MODES:
        raise TlsSessionError(f"tls pool config: ktls must be one of {', '.join(KTLS_MODES)}")
    if config.get("verify") is False:
        raise TlsSessionError("tls pool config: server verification cannot be turned off (give ca_file)")
    handoff, fallback = handoff_setting(config)
    return TlsPoolConfig(
        host=host,
        port=port,
        server_name=str(config.get("server_name") or host),
        ca_file=str(ca_file) if ca_file else None,
        cert_file=str(cert_file) if cert_file else None,
        key_file=str(key_file) if key_file else None,
        connect_timeout_s=float(config.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT_S)),
        post_handshake_wait_s=float(config.get("post_handshake_wait", DEFAULT_POST_HANDSHAKE_WAIT_S)),
        ktls=ktls,
        handoff=handoff,
        fallback=fallback,
    )


def handoff_setting(config: dict[str, Any]) -> tuple[str, str]:
    """(handoff, fallback) of a pool's config, validated. A pool without a TLS ``handoff`` (the
    manager's default ``inject``) takes it from the older ``ktls`` key: on/off/auto -> ktls/record/auto."""
    handoff = str(config.get("handoff") or "inject")
    if handoff == "inject":
        handoff = {"on": KTLS, "off": RECORD}.get(str(config.get("ktls", "auto")), "auto")
    if handoff not in TLS_HANDOFFS:
        raise TlsSessionError(f"tls pool config: handoff must be one of {', '.join(TLS_HANDOFFS)}, got {handoff!r}")
    fallback = str(config.get("fallback") or RECORD)
    if fallback not in TLS_FALLBACKS:
        raise TlsSessionError(f"tls pool config: fallback must be one of {', '.join(TLS_FALLBACKS)}, got {fallback!r}")
    return handoff, fallback


def choose_handoff(handoff: str, fallback: str = RECORD, ulp_available: bool | None = None) -> str:
    """The path a hand-out takes: ``ktls``, ``record`` or ``relay``. ``auto`` is kernel TLS where the
    kernel offers the ``tls`` ULP, else ``fallback``. ``ulp_available`` None: ask the kernel."""
    if handoff == "auto":
        available = ktls_available() if ulp_available is None else ulp_available
        return KTLS if available else fallback
    if handoff not in (KTLS, RECORD, RELAY):
        raise TlsSessionError(f"unknown TLS handoff {handoff!r} (one of {', '.join(TLS_HANDOFFS)})")
    return handoff


def resolve_handoff(config: dict[str, Any]) -> str:
    """The manager's question at start: how does a plain acquire of this pool get its session?"""
    handoff, fallback = handoff_setting(config)
    return choose_handoff(handoff, fallback)


def client_context(cfg: TlsPoolConfig) -> ssl.SSLContext:
    """A TLS 1.3-only client context verifying the server (and presenting our certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    try:
        if cfg.ca_file:
            ctx.load_verify_locations(cafile=cfg.ca_file)
        else:
            ctx.load_default_certs()
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSessionError(f"tls pool: cannot load certificates: {exc}") from None
    return ctx


# -- key log ---------------------------------------------------------------------------------


class _KeyLog:
    """Where OpenSSL writes this handshake's secrets: an anonymous memory file (memfd) when the
    kernel has it, else a 0600 file in a private directory, unlinked as soon as it is opened.
    Either way no path with secrets outlives the call to ``attach``."""

    def __init__(self) -> None:
        self.fd = -1

    def attach(self, ctx: ssl.SSLContext) -> None:
        try:
            self.fd = os.memfd_create("tls-keylog", os.MFD_CLOEXEC)
            ctx.keylog_filename = f"/proc/self/fd/{self.fd}"
            return
        except (AttributeError, OSError):
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        directory = tempfile.mkdtemp(prefix="cpm-tls-", dir=base)  # mode 0700
        path = os.path.join(directory, "keylog")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            ctx.keylog_filename = path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(directory)

    def secrets(self) -> dict[str, tuple[str, bytes]]:
        """label -> (client_random hex, secret) of the lines written so far."""
        data = b""
        while True:
            chunk = os.pread(self.fd, 65536, len(data))
            if not chunk:
                break
            data += chunk
        out: dict[str, tuple[str, bytes]] = {}
        for line in data.decode("ascii", "replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in KEYLOG_LABELS:
                out[parts[0]] = (parts[1], bytes.fromhex(parts[2]))
        return out

    def close(self, ctx: ssl.SSLContext) -> None:
        with contextlib.suppress(Exception):
            ctx.keylog_filename = None  # type: ignore[assignment]  # closes OpenSSL's side
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- handshake -------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise TlsSessionError(f"server closed the connection during the handshake ({len(buf)} of {n} bytes)")
        buf += chunk
    return bytes(buf)


def read_record(sock: socket.socket) -> bytes:
    """Exactly one TLS record (header + body) from a blocking socket."""
    header = _recv_exact(sock, tls13.HEADER_LEN)
    try:
        length = tls13.parse_header(header)
    except tls13.TLSRecordError as exc:
        raise TlsSessionError(f"during the handshake: {exc}") from None
    return header + _recv_exact(sock, length)


@dataclass
class Handshake:
    """A finished client handshake, positioned exactly after the server's Finished record."""

    version: str
    suite: tls13.CipherSuite
    client_secret: bytes
    server_secret: bytes
    records_in: int
    handshake_us: float
    peer_cert_subject: str


def client_handshake(sock: socket.socket, ctx: ssl.SSLContext, server_name: str) -> Handshake:
    """Run the client handshake on ``sock`` through MemoryBIOs, one incoming record at a time,
    and take the application traffic secrets from the key log. Raises TlsSessionError or
    ssl.SSLError (certificate verification)."""
    keylog = _KeyLog()
    keylog.attach(ctx)
    try:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_name)
        t0 = time.perf_counter_ns()
        records = 0
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    sock.sendall(pending)
                incoming.write(read_record(sock))
                records += 1
        pending = outgoing.read()
        if pending:
            sock.sendall(pending)  # the client Finished
        handshake_us = (time.perf_counter_ns() - t0) / 1e3
        if incoming.pending:
            raise TlsSessionError(f"{incoming.pending} bytes past the handshake were fed to OpenSSL")
        version = obj.version() or ""
        if version != "TLSv1.3":
            raise TlsSessionError(f"server negotiated {version or 'nothing'}; only TLS 1.3 sessions can be handed over")
        cipher = obj.cipher()
        suite = tls13.suite_by_name(cipher[0] if cipher else "")
        logged = keylog.secrets()
        missing = [label for label in KEYLOG_LABELS if label not in logged]
        if missing:
            raise TlsSessionError(f"the key log lacks {', '.join(missing)}")
        randoms = {logged[label][0] for label in KEYLOG_LABELS}
        if len(randoms) != 1:
            raise TlsSessionError("the key log holds secrets of more than one handshake")
        cert = obj.getpeercert() or {}
        subject = ",".join("=".join(kv) for rdn in cert.get("subject", ()) for kv in rdn)
        return Handshake(
            version=version,
            suite=suite,
            client_secret=logged["CLIENT_TRAFFIC_SECRET_0"][1],
            server_secret=logged["SERVER_TRAFFIC_SECRET_0"][1],
            records_in=records,
            handshake_us=handshake_us,
            peer_cert_subject=subject,
        )
    finally:
        keylog.close(ctx)


# -- kernel TLS ----------------------------------------------------------------------------------

SOL_TLS = 282
TCP_ULP = 31
TLS_TX = 1
TLS_RX = 2
TLS_1_3_VERSION = 0x0304
# linux/tls.h: cipher type, IV size (explicit part), key size, salt size, record sequence size
KTLS_CIPHERS = {
    "TLS_AES_128_GCM_SHA256": (51, 8, 16, 4, 8),  # TLS_CIPHER_AES_GCM_128
    "TLS_AES_256_GCM_SHA384": (52, 8, 32, 4, 8),  # TLS_CIPHER_AES_GCM_256
    "TLS_CHACHA20_POLY1305_SHA256": (54, 12, 32, 0, 8),  # TLS_CIPHER_CHACHA20_POLY1305
}


def ktls_available(path: str = "/proc/sys/net/ipv4/tcp_available_ulp") -> bool:
    """True if the kernel offers the ``tls`` upper-layer protocol."""
    try:
        with open(path, encoding="ascii") as fh:
            return "tls" in fh.read().split()
    except OSError:
        return False


def ktls_crypto_info(suite_name: str, key: bytes, iv: bytes, seq: int) -> bytes:
    """struct tls12_crypto_info_<cipher> for TLS 1.3: {u16 version, u16 cipher_type, iv, key,
    salt, rec_seq}; the 12-byte TLS 1.3 IV splits into salt (first 4) + iv (last 8) for GCM."""
    try:
        cipher_type, iv_size, key_size, salt_size, seq_size = KTLS_CIPHERS[suite_name]
    except KeyError:
        raise tls13.TLSError(f"kernel TLS does not support {suite_name}") from None
    if len(key) != key_size or len(iv) != salt_size + iv_size:
        raise tls13.TLSError(f"key/iv sizes do not match {suite_name}")
    salt, explicit = iv[:salt_size], iv[salt_size:]
    return struct.pack("=HH", TLS_1_3_VERSION, cipher_type) + explicit + key + salt + seq.to_bytes(seq_size, "big")


def install_ktls(sock: socket.socket, suite_name: str, tx: tls13.Direction, rx: tls13.Direction) -> None:
    """Attach the tls ULP and install both directions' keys (raises OSError where unsupported)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
    sock.setsockopt(SOL_TLS, TLS_TX, ktls_crypto_info(suite_name, tx.key, tx.iv, tx.seq))
    sock.setsockopt(SOL_TLS, TLS_RX, ktls_crypto_info(suite_name, rx.key, rx.iv, rx.seq))


# -- sessions --------------------------------------------------------------------------------------


class _State:
    """The manager's record-layer view of one pooled session (the socket held only weakly)."""

    def __init__(self, sock: socket.socket, session: tls13.TLSSession, meta: dict[str, Any], inject_path: str) -> None:
        self.session = session
        self.meta = meta
        self.inject_path = inject_path  # ktls | record: the path of a hand-out that is not relayed
        self.explicit_ktls = False  # ktls asked for by name: failing to install it is an error
        self.lock = threading.Lock()
        self.error = ""
        self.ktls_installed = False  # kept if a hand-out fails and the session returns to the pool


_SESSIONS: weakref.WeakKeyDictionary[socket.socket, _State] = weakref.WeakKeyDictionary()
_SESSIONS_LOCK = threading.Lock()


def _state(sock: socket.socket) -> _State | None:
    with _SESSIONS_LOCK:
        return _SESSIONS.get(sock)


def open_session(config: dict[str, Any]) -> tuple[socket.socket, dict[str, Any]]:
    """Connect, verify and handshake one TLS 1.3 session; return the socket (blocking) and the
    meta for logs and the pool (no secrets: those are added by ``prepare_handout`` only)."""
    cfg = parse_config(config)
    ctx = client_context(cfg)
    t0 = time.perf_counter_ns()
    try:
        sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout_s)
    except OSError as exc:
        raise TlsSessionError(f"tls {cfg.host}:{cfg.port}: cannot connect: {exc}") from None
    t_tcp = time.perf_counter_ns()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        try:
            hs = client_handshake(sock, ctx, cfg.server_name)
        except ssl.SSLCertVerificationError as exc:
            raise TlsSessionError(f"tls {cfg.where}: server certificate rejected: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise TlsSessionError(f"tls {cfg.where}: handshake failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise TlsSessionError(f"tls {cfg.where}: handshake failed: {exc}") from None
        meta: dict[str, Any] = {
            "kind": "tls",
            "server": f"{cfg.host}:{cfg.port}",
            "server_name": cfg.server_name,
            "tls": {
                "version": hs.version,
                "cipher_suite": hs.suite.name,
                "peer_verified": True,
                "peer_subject": hs.peer_cert_subject,
                "client_cert": bool(cfg.cert_file),
            },
            "opened_ns": time.time_ns(),
            "setup_us": {
                "tcp": round((t_tcp - t0) / 1e3, 1),
                "handshake": round(hs.handshake_us, 1),
            },
        }
        register_session(sock, session_from_handshake(sock, hs), meta, cfg)
        state = _state(sock)
        assert state is not None
        if cfg.post_handshake_wait_s > 0:
            select.select([sock], [], [], cfg.post_handshake_wait_s)
        if not _absorb(state, sock):
            raise TlsSessionError(f"tls {cfg.where}: session unusable right after the handshake: {state.error}")
        meta["setup_us"]["total"] = round((time.perf_counter_ns() - t0) / 1e3, 1)
    except BaseException:
        with _SESSIONS_LOCK:
            _SESSIONS.pop(sock, None)
        sock.close()
        raise
    sock.settimeout(None)  # blocking: O_NONBLOCK would travel with the fd
    return sock, dict(meta)


def session_from_handshake(sock: socket.socket, hs: Handshake) -> tls13.TLSSession:
    """The manager's record layer for a session just handshaken on ``sock`` (held weakly)."""
    params = tls13.SessionParams(hs.suite, hs.server_secret, hs.client_secret)
    return tls13.TLSSession(weakref.proxy(sock), params)  # type: ignore[arg-type]


def register_session(sock: socket.socket, session: tls13.TLSSession, meta: dict[str, Any], cfg: TlsPoolConfig) -> None:
    """Track a session this process handshook so ``prepare_handout``/``relay_codec`` can hand it on
    (also for other kinds that run TLS under their protocol, e.g. PostgreSQL). ``session.sock``
    must hold ``sock`` only weakly."""
    inject_path = choose_handoff(cfg.handoff, RECORD)
    if inject_path == RELAY:
        inject_path = choose_handoff("auto", RECORD)  # an acquire asking for "inject" on a relay pool
    state = _State(sock, session, meta, inject_path)
    state.explicit_ktls = cfg.handoff == KTLS
    with _SESSIONS_LOCK:
        _SESSIONS[sock] = state


def _absorb(state: _State, sock: socket.socket) -> bool:
    """Consume and process every complete record waiting on the socket (never a partial one:
    its bytes stay for the receiver). False when the session is unfit (EOF, alert, bad record)."""
    session = state.session
    with state.lock:
        if session.closed or session.eof or sock.fileno() < 0:
            state.error = state.error or "closed"
            return False
        if sock.gettimeout() is not None:
            # A Python-level timeout turns a MSG_DONTWAIT peek into a wait; hand-out needs blocking mode anyway.
            sock.settimeout(None)
        while True:
            try:
                head = sock.recv(tls13.HEADER_LEN, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            except OSError as exc:
                state.error = f"socket error: {exc.strerror or exc}"
                return False
            if not head:
                state.error = "server closed the connection"
                return False
            if len(head) < tls13.HEADER_LEN:
                return True  # a record still arriving: the receiver reads it
            try:
                length = tls13.parse_header(head)
            except tls13.TLSRecordError as exc:
                state.error = str(exc)
                return False
            total = tls13.HEADER_LEN + length
            try:
                whole = sock.recv(total, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            except OSError as exc:
                state.error = f"socket error: {exc.strerror or exc}"
                return False
            if len(whole) < total:
                return True
            record = sock.recv(total, socket.MSG_DONTWAIT)  # exactly what was peeked
            try:
                session.process_record(record[: tls13.HEADER_LEN], record[tls13.HEADER_LEN :])
            except tls13.TLSError as exc:
                state.error = str(exc)
                return False
            if session.eof:
                state.error = "server sent close_notify"
                return False


def check_session(sock: socket.socket) -> bool:
    """True iff the session may be handed out: known here, not closed, no alert or bad record."""
    state = _state(sock)
    if state is None or sock.fileno() < 0:
        return False
    return _absorb(state, sock)


def quick_check(sock: socket.socket) -> bool | None:
    """Non-blocking and complete (records are only consumed when fully there): never None."""
    return check_session(sock)


def session_meta(sock: socket.socket) -> dict[str, Any] | None:
    """The session's meta without secrets (safe to log or keep)."""
    state = _state(sock)
    return dict(state.meta) if state else None


def prepare_handout(sock: socket.socket, session: dict[str, Any] | None = None, relay: bool = False) -> dict[str, Any]:
    """Called by the manager right before the hand-out: account for the records that arrived,
    install kernel TLS where that is the path, and return the reply's meta: with the secrets for
    the record layer, with none for kernel TLS and for a relay (``relay``: the manager keeps the
    session and relays plaintext; ``relay_codec`` follows). Raises TlsSessionError when the session
    must be discarded instead."""
    state = _state(sock)
    if state is None:
        raise TlsSessionError("not a session opened by this pool")
    if not _absorb(state, sock):
        raise TlsSessionError(f"session unfit for hand-out: {state.error}")
    tls_session = state.session
    with state.lock:
        meta = dict(state.meta)
        tls = dict(meta["tls"])
        reader, writer = tls_session.reader, tls_session.writer
        if relay:
            if state.ktls_installed:
                raise TlsSessionError("kernel TLS is installed on this session: it cannot be relayed")
            tls.update(
                {
                    "path": RELAY,
                    "client_seq": writer.seq,
                    "server_seq": reader.seq,
                    "tickets": tls_session.tickets_seen,
                    "key_updates": tls_session.key_updates_received + tls_session.key_updates_sent,
                }
            )
            meta["tls"] = tls
            return meta
        path = "record_layer"
        if state.ktls_installed:
            path = "ktls"
        elif state.inject_path == KTLS:
            if state.explicit_ktls and not ktls_available():
                raise TlsSessionError("handoff is 'ktls' but the kernel has no tls ULP")
            try:
                install_ktls(sock, tls_session.suite.name, writer, reader)
                state.ktls_installed = True
                path = "ktls"
            except (OSError, tls13.TLSError) as exc:
                if state.explicit_ktls:
                    raise TlsSessionError(f"kernel TLS could not be installed: {exc}") from None
        tls.update(
            {
                "path": path,
                "client_traffic_secret": writer.secret.hex(),
                "server_traffic_secret": reader.secret.hex(),
                "client_seq": writer.seq,
                "server_seq": reader.seq,
                "plaintext": bytes(tls_session._plain).hex(),
                "tickets": tls_session.tickets_seen,
                "key_updates": tls_session.key_updates_received + tls_session.key_updates_sent,
            }
        )
        if path == "ktls":
            # The kernel holds the keys now; the caller needs none (and gets none).
            for key in ("client_traffic_secret", "server_traffic_secret"):
                tls.pop(key)
        else:
            # The record keys, derived here already: the cold receiver then needs no HKDF (nor hmac/hashlib).
            tls.update(
                {
                    "client_key": writer.key.hex(),
                    "client_iv": writer.iv.hex(),
                    "server_key": reader.key.hex(),
                    "server_iv": reader.iv.hex(),
                }
            )
        meta["tls"] = tls
    return meta


def relay_codec(sock: socket.socket) -> tls13.RelayCodec:
    """The session of ``sock`` as a relay codec (after ``prepare_handout(..., relay=True)``): the
    relay hub owns the socket from now on and the session's writes go through the relay."""
    state = _state(sock)
    if state is None:
        raise TlsSessionError("not a session opened by this pool")
    with state.lock:
        return tls13.RelayCodec(state.session)


def close_session(sock: socket.socket) -> None:
    """Send close_notify and close (the manager discards a session it still holds)."""
    state = _state(sock)
    with _SESSIONS_LOCK:
        _SESSIONS.pop(sock, None)
    if state is not None:
        with contextlib.suppress(Exception):
            state.session.close()
    sock.close()
