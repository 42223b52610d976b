"""A TLS 1.3 record layer for continuing a session that another process handshook.

The pool manager completes the handshake and hands over the TCP socket together with the
session's application traffic secrets and both sequence numbers (``meta.tls`` of the acquire
reply). This module derives the record keys from those secrets (HKDF-Expand-Label, RFC 8446
§7.1, via ``hmac``/``hashlib``), protects records with the AEAD of the negotiated suite and
offers a socket-like object (``TLSSession``: ``sendall``/``send``/``recv``/``close``) that the
echo check and ``pg_wire`` run over unchanged.

AEAD comes from the libcrypto that Python's ``_ssl`` extension is linked against, called with
``ctypes`` (EVP_* interface): no third-party package, and no second copy of OpenSSL.

Handled after the handshake: application data; NewSessionTicket (ignored: resumption is not
used); KeyUpdate (read keys updated; answered with our own KeyUpdate when the peer requests
it); close_notify (EOF); every other alert (``TLSAlertReceived`` naming it); record size
limits (2^14 plaintext, 2^14 + 256 ciphertext); authentication failure (``TLSRecordError``,
a bad_record_mac alert is sent and the connection dropped, as RFC 8446 §5.2 requires).
Not handled: renegotiation (TLS 1.3 has none), post-handshake client authentication, early data.

Stdlib only; ``ctypes`` is imported lazily by the first AEAD operation.

Cold-start cost (a receiving function pays it inside its connect time): the manager sends the
derived record keys and IVs next to the secrets, so continuing a session needs no HKDF and no
``hmac``/``hashlib`` (whose import initialises every OpenSSL digest); HKDF is imported only at a
KeyUpdate. libcrypto is opened by its soname (no ``_hashlib``, no ``find_library``), OpenSSL is
initialised without reading its configuration file (a record layer needs none), and only the
negotiated suite's cipher is fetched.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

# Content types (RFC 8446 §5.1) and handshake types (§4).
CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
NEW_SESSION_TICKET = 4
KEY_UPDATE = 24

MAX_PLAINTEXT = 1 << 14
MAX_CIPHERTEXT = (1 << 14) + 256
TAG_LEN = 16
HEADER_LEN = 5
_HEADER = struct.Struct("!BHH")
_LEGACY_VERSION = 0x0303

ALERT_NAMES = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}
CLOSE_NOTIFY = 0
UNEXPECTED_MESSAGE = 10
BAD_RECORD_MAC = 20
RECORD_OVERFLOW = 22
DECODE_ERROR = 50
USER_CANCELED = 90


class TLSError(Exception):
    """Base of this module's errors."""


class TLSRecordError(TLSError):
    """A record we cannot accept (authentication failure, bad framing, oversize). The
    connection is unusable afterwards; ``alert`` is what we sent (or would send) the peer."""

    def __init__(self, message: str, alert: int) -> None:
        super().__init__(message)
        self.alert = alert


class TLSAlertReceived(TLSError):
    """The peer sent a fatal alert (anything but close_notify / user_canceled)."""

    def __init__(self, description: int, encrypted: bool = True) -> None:
        name = ALERT_NAMES.get(description, "unknown")
        where = "" if encrypted else " (unprotected)"
        super().__init__(f"peer sent TLS alert {name} ({description}){where}")
        self.description = description
        self.name = name


# -- cipher suites and key schedule -----------------------------------------------------


class CipherSuite:
    """A TLS 1.3 suite: AEAD key length, hash, and the libcrypto function giving its EVP_CIPHER.
    (A plain class, not a dataclass: ``dataclasses`` costs a cold process milliseconds.)"""

    __slots__ = ("code", "evp_cipher", "hash_len", "hash_name", "iv_len", "key_len", "name")

    def __init__(self, name: str, code: int, key_len: int, hash_name: str, evp_cipher: str, hash_len: int) -> None:
        self.name = name
        self.code = code
        self.key_len = key_len
        self.hash_name = hash_name
        self.evp_cipher = evp_cipher
        self.hash_len = hash_len
        self.iv_len = 12

    def __repr__(self) -> str:
        return f"CipherSuite({self.name})"


SUITES: dict[str, CipherSuite] = {
    s.name: s
    for s in (
        CipherSuite("TLS_AES_128_GCM_SHA256", 0x1301, 16, "sha256", "EVP_aes_128_gcm", 32),
        CipherSuite("TLS_AES_256_GCM_SHA384", 0x1302, 32, "sha384", "EVP_aes_256_gcm", 48),
        CipherSuite("TLS_CHACHA20_POLY1305_SHA256", 0x1303, 32, "sha256", "EVP_chacha20_poly1305", 32),
    )
}


def suite_by_name(name: str) -> CipherSuite:
    try:
        return SUITES[name]
    except KeyError:
        raise TLSError(f"unsupported TLS 1.3 cipher suite {name!r} (supported: {', '.join(SUITES)})") from None


def hkdf_expand(secret: bytes, info: bytes, length: int, hash_name: str) -> bytes:
    """HKDF-Expand (RFC 5869 §2.3)."""
    import hmac  # here, not at the top: a continued session only needs it at a KeyUpdate

    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        if counter > 255:
            raise ValueError("HKDF-Expand length too large")
        block = hmac.digest(secret, block + info + bytes([counter]), hash_name)
        out += block
        counter += 1
    return out[:length]


def hkdf_expand_label(secret: bytes, label: str, context: bytes, length: int, hash_name: str) -> bytes:
    """HKDF-Expand-Label (RFC 8446 §7.1): the HkdfLabel struct with the "tls13 " prefix."""
    full = b"tls13 " + label.encode("ascii")
    info = struct.pack("!HB", length, len(full)) + full + bytes([len(context)]) + context
    return hkdf_expand(secret, info, length, hash_name)


def traffic_keys(secret: bytes, suite: CipherSuite) -> tuple[bytes, bytes]:
    """(write key, write IV) of a traffic secret (RFC 8446 §7.3)."""
    return (
        hkdf_expand_label(secret, "key", b"", suite.key_len, suite.hash_name),
        hkdf_expand_label(secret, "iv", b"", suite.iv_len, suite.hash_name),
    )


def next_traffic_secret(secret: bytes, suite: CipherSuite) -> bytes:
    """application_traffic_secret_N+1 (RFC 8446 §7.2, after a KeyUpdate)."""
    return hkdf_expand_label(secret, "traffic upd", b"", suite.hash_len, suite.hash_name)


def record_nonce(iv: bytes, seq: int) -> bytes:
    """Per-record nonce (RFC 8446 §5.3): the 64-bit sequence number, left-padded, XOR the IV."""
    padded = seq.to_bytes(len(iv), "big")
    return bytes(a ^ b for a, b in zip(iv, padded, strict=True))


# -- AEAD through libcrypto ---------------------------------------------------------------


SONAMES = ("libcrypto.so.3", "libcrypto.so.1.1")
_OPENSSL_INIT_NO_LOAD_CONFIG = 0x00000080
_EVP_CTRL_AEAD_GET_TAG = 0x10
_EVP_CTRL_AEAD_SET_TAG = 0x11


def _ctypes_binding() -> Any:
    """What this module needs of ``ctypes``, built on its C core ``_ctypes`` alone: importing the
    ``ctypes`` package costs a cold process about a millisecond more (its Python layer defines
    every C type); this uses five of them. Falls back to ``ctypes`` itself if the core differs."""
    try:
        import _ctypes

        class Binding:
            class c_int(_ctypes._SimpleCData):  # ctypes' own names
                _type_ = "i"

            class c_uint64(_ctypes._SimpleCData):
                _type_ = "Q"

            class c_void_p(_ctypes._SimpleCData):
                _type_ = "P"

            class c_char_p(_ctypes._SimpleCData):
                _type_ = "z"

            class c_char(_ctypes._SimpleCData):
                _type_ = "c"

            byref = staticmethod(_ctypes.byref)

            @staticmethod
            def create_string_buffer(size: int) -> Any:
                return (Binding.c_char * size)()

            class CDLL:
                def __init__(self, name: str) -> None:
                    self._name = name
                    self._handle = _ctypes.dlopen(name, os.RTLD_LOCAL)

                def __getattr__(self, name: str) -> Any:
                    if name.startswith("__"):
                        raise AttributeError(name)
                    fn = _Function((name, self))  # type: ignore[arg-type]  # AttributeError if absent
                    setattr(self, name, fn)
                    return fn

        class _Function(_ctypes.CFuncPtr):  # type: ignore[misc]
            _flags_ = _ctypes.FUNCFLAG_CDECL
            _restype_ = Binding.c_int

        return Binding
    except (ImportError, AttributeError, TypeError):
        import ctypes

        return ctypes


class _LibCrypto:
    """The EVP_* functions of the libcrypto Python's ``_hashlib``/``_ssl`` are linked against,
    found through the extension's own handle (dlsym searches its dependencies), else through
    /proc/self/maps. ``_hashlib`` first: ``hmac`` has loaded it already, ``_ssl`` costs more."""

    _instance: _LibCrypto | None = None

    def __init__(self) -> None:
        ctypes = _ctypes_binding()
        self.ctypes = ctypes
        lib = self._find(ctypes)
        vp, cint, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        self.new = lib.EVP_CIPHER_CTX_new
        self.new.restype, self.new.argtypes = vp, []
        self.free = lib.EVP_CIPHER_CTX_free
        self.free.restype, self.free.argtypes = None, [vp]
        self.init = lib.EVP_CipherInit_ex
        self.init.restype, self.init.argtypes = cint, [vp, vp, vp, cp, cp, cint]
        self.update = lib.EVP_CipherUpdate
        self.update.restype = cint
        self.update.argtypes = [vp, vp, vp, cp, cint]  # the int* goes as byref(c_int)
        self.final = lib.EVP_CipherFinal_ex
        self.final.restype, self.final.argtypes = cint, [vp, vp, vp]
        self.ctrl = lib.EVP_CIPHER_CTX_ctrl
        self.ctrl.restype, self.ctrl.argtypes = cint, [vp, cint, cint, vp]
        self.lib = lib
        self.ciphers: dict[str, int] = {}

    @staticmethod
    def _find(ctypes: Any) -> Any:
        # By soname first: the dynamic loader's cache, no Python extension and no /proc scan.
        for soname in SONAMES:
            try:
                lib = ctypes.CDLL(soname)
                lib.EVP_CIPHER_CTX_new  # noqa: B018 - probe: raises AttributeError if absent
            except (OSError, AttributeError):
                continue
            init = getattr(lib, "OPENSSL_init_crypto", None)
            if init is not None:  # OpenSSL >= 1.1: skip openssl.cnf (nothing here is configurable by it)
                init.restype, init.argtypes = ctypes.c_int, [ctypes.c_uint64, ctypes.c_void_p]
                init(_OPENSSL_INIT_NO_LOAD_CONFIG, None)
            return lib
        import _hashlib

        tried = []
        candidates: list[str] = [str(getattr(_hashlib, "__file__", "") or "")]
        with contextlib.suppress(OSError), open("/proc/self/maps", encoding="ascii", errors="replace") as fh:
            for line in fh:
                mapped = line.rstrip("\n").split(" ", 5)[-1].strip()
                if "libcrypto" in os.path.basename(mapped) and mapped not in candidates:
                    candidates.append(mapped)
        for path in candidates:
            if not path:
                continue
            try:
                lib = ctypes.CDLL(path)
                lib.EVP_CIPHER_CTX_new  # noqa: B018 - probe: raises AttributeError if absent
                return lib
            except (OSError, AttributeError) as exc:
                tried.append(f"{path}: {exc}")
        with contextlib.suppress(ImportError):
            import _ssl

            with contextlib.suppress(OSError, AttributeError):
                lib = ctypes.CDLL(_ssl.__file__)
                lib.EVP_CIPHER_CTX_new  # noqa: B018
                return lib
        import ctypes.util

        name = ctypes.util.find_library("crypto")
        if name:
            return ctypes.CDLL(name)
        raise TLSError("no libcrypto with the EVP AEAD functions found (" + "; ".join(tried) + ")")

    @classmethod
    def get(cls) -> _LibCrypto:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def cipher(self, name: str) -> int:
        ptr = self.ciphers.get(name)
        if ptr is None:
            fn = getattr(self.lib, name)
            fn.restype, fn.argtypes = self.ctypes.c_void_p, []
            ptr = fn()
            if not ptr:
                raise TLSError(f"libcrypto has no {name}")
            self.ciphers[name] = ptr
        return ptr


class Aead:
    """One direction's AEAD context: the key is set once, the nonce per record."""

    def __init__(self, suite: CipherSuite, key: bytes, encrypt: bool) -> None:
        self._c = c = _LibCrypto.get()
        self._enc = 1 if encrypt else 0
        self._ctx = c.new()
        if not self._ctx:
            raise TLSError("EVP_CIPHER_CTX_new failed")
        if len(key) != suite.key_len:
            raise TLSError(f"{suite.name} needs a {suite.key_len}-byte key, got {len(key)}")
        if c.init(self._ctx, c.cipher(suite.evp_cipher), None, key, None, self._enc) != 1:
            raise TLSError(f"EVP_CipherInit_ex failed for {suite.name}")
        self._outl = c.ctypes.c_int(0)

    def __del__(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx:
            self._c.free(ctx)
            self._ctx = None

    def seal(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        c, ctx, outl = self._c, self._ctx, self._outl
        if c.init(ctx, None, None, None, nonce, 1) != 1:
            raise TLSError("EVP_CipherInit_ex (nonce) failed")
        ref = c.ctypes.byref(outl)
        c.update(ctx, None, ref, aad, len(aad))
        out = c.ctypes.create_string_buffer(len(plaintext) + TAG_LEN)
        if c.update(ctx, out, ref, plaintext, len(plaintext)) != 1:
            raise TLSError("EVP_CipherUpdate failed")
        n = outl.value
        c.final(ctx, None, ref)
        tag = c.ctypes.create_string_buffer(TAG_LEN)
        if c.ctrl(ctx, _EVP_CTRL_AEAD_GET_TAG, TAG_LEN, tag) != 1:
            raise TLSError("cannot read the AEAD tag")
        return out.raw[:n] + tag.raw

    def open(self, nonce: bytes, aad: bytes, sealed: bytes) -> bytes | None:
        """Plaintext, or None when the tag does not authenticate."""
        if len(sealed) < TAG_LEN:
            return None
        c, ctx, outl = self._c, self._ctx, self._outl
        body, tag = sealed[:-TAG_LEN], sealed[-TAG_LEN:]
        if c.init(ctx, None, None, None, nonce, 0) != 1:
            raise TLSError("EVP_CipherInit_ex (nonce) failed")
        ref = c.ctypes.byref(outl)
        c.update(ctx, None, ref, aad, len(aad))
        out = c.ctypes.create_string_buffer(len(body) + TAG_LEN)
        if c.update(ctx, out, ref, body, len(body)) != 1:
            return None
        n = outl.value
        if c.ctrl(ctx, _EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) != 1:
            raise TLSError("cannot set the AEAD tag")
        if c.final(ctx, None, ref) != 1:
            return None
        return out.raw[:n]


class Direction:
    """Traffic secret, derived key/IV, AEAD context and sequence number of one direction."""

    def __init__(
        self, suite: CipherSuite, secret: bytes, seq: int, encrypt: bool, key_iv: tuple[bytes, bytes] | None = None
    ) -> None:
        self.suite = suite
        self.encrypt = encrypt
        self.seq = seq
        self.set_secret(secret, key_iv)

    def set_secret(self, secret: bytes, key_iv: tuple[bytes, bytes] | None = None) -> None:
        """Switch to ``secret``; ``key_iv`` is its (key, IV) when the caller derived them already."""
        self.secret = secret
        key, self.iv = key_iv if key_iv is not None else traffic_keys(secret, self.suite)
        if len(self.iv) != self.suite.iv_len:
            raise TLSError(f"{self.suite.name} needs a {self.suite.iv_len}-byte IV, got {len(self.iv)}")
        self.key = key
        self.aead = Aead(self.suite, key, self.encrypt)

    def update(self) -> None:
        """KeyUpdate: the next generation of the secret, sequence number back to 0."""
        self.set_secret(next_traffic_secret(self.secret, self.suite))
        self.seq = 0

    def seal(self, content_type: int, data: bytes) -> bytes:
        """One protected record (header included) carrying ``data`` of ``content_type``."""
        if len(data) > MAX_PLAINTEXT:
            raise TLSError(f"record plaintext of {len(data)} bytes exceeds {MAX_PLAINTEXT}")
        inner = data + bytes([content_type])
        header = _HEADER.pack(APPLICATION_DATA, _LEGACY_VERSION, len(inner) + TAG_LEN)
        sealed = self.aead.seal(record_nonce(self.iv, self.seq), header, inner)
        self.seq += 1
        return header + sealed

    def open(self, header: bytes, body: bytes) -> tuple[int, bytes]:
        """(content type, content) of one protected record; raises TLSRecordError."""
        inner = self.aead.open(record_nonce(self.iv, self.seq), header, body)
        if inner is None:
            raise TLSRecordError(
                f"TLS record {self.seq} failed authentication (tampered, or the keys/sequence number are wrong)",
                BAD_RECORD_MAC,
            )
        self.seq += 1
        end = len(inner)
        while end and inner[end - 1] == 0:  # strip the zero padding (RFC 8446 §5.4)
            end -= 1
        if not end:
            raise TLSRecordError("TLS record has no content type (all padding)", UNEXPECTED_MESSAGE)
        if end - 1 > MAX_PLAINTEXT:
            raise TLSRecordError(f"TLS record plaintext of {end - 1} bytes exceeds {MAX_PLAINTEXT}", RECORD_OVERFLOW)
        return inner[end - 1], inner[: end - 1]


def parse_header(header: bytes) -> int:
    """Length of the record body after a 5-byte header; raises TLSRecordError on a bad one."""
    ctype, version, length = _HEADER.unpack(header)
    if ctype not in (APPLICATION_DATA, ALERT, CHANGE_CIPHER_SPEC, HANDSHAKE):
        raise TLSRecordError(f"not a TLS record (content type {ctype})", DECODE_ERROR)
    if version >> 8 != 3:
        raise TLSRecordError(f"not a TLS record (version {version:#06x})", DECODE_ERROR)
    if length > MAX_CIPHERTEXT:
        raise TLSRecordError(f"TLS record of {length} bytes exceeds {MAX_CIPHERTEXT}", RECORD_OVERFLOW)
    return length


# -- the session ---------------------------------------------------------------------------


class SessionParams:
    """What the receiver needs to continue a session (``meta.tls`` of the acquire reply)."""

    __slots__ = (
        "pending_plaintext",
        "read_key_iv",
        "read_secret",
        "read_seq",
        "suite",
        "version",
        "write_key_iv",
        "write_secret",
        "write_seq",
    )

    def __init__(
        self,
        suite: CipherSuite,
        read_secret: bytes,  # the server's application traffic secret (we read what it writes)
        write_secret: bytes,
        read_seq: int = 0,
        write_seq: int = 0,
        pending_plaintext: bytes = b"",  # application bytes the manager already decrypted
        version: str = "TLSv1.3",
        read_key_iv: tuple[bytes, bytes] | None = None,  # derived from read_secret by the sender, if it did
        write_key_iv: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.suite = suite
        self.read_secret = read_secret
        self.write_secret = write_secret
        self.read_seq = read_seq
        self.write_seq = write_seq
        self.pending_plaintext = pending_plaintext
        self.version = version
        self.read_key_iv = read_key_iv
        self.write_key_iv = write_key_iv

    @classmethod
    def from_meta(cls, tls: dict[str, Any]) -> SessionParams:
        """Parse ``meta.tls``; raises TLSError naming the missing or bad field."""
        if not isinstance(tls, dict):
            raise TLSError("meta.tls is missing: the pool did not hand over a TLS session")
        version = tls.get("version")
        if version != "TLSv1.3":
            raise TLSError(f"only TLS 1.3 sessions can be continued, got {version!r}")
        try:
            suite = suite_by_name(str(tls["cipher_suite"]))
            read_secret = bytes.fromhex(tls["server_traffic_secret"])
            write_secret = bytes.fromhex(tls["client_traffic_secret"])
            read_seq = int(tls["server_seq"])
            write_seq = int(tls["client_seq"])
            pending = bytes.fromhex(tls.get("plaintext", ""))
            read_key_iv = _key_iv(tls, "server")
            write_key_iv = _key_iv(tls, "client")
        except KeyError as exc:
            raise TLSError(f"meta.tls lacks {exc.args[0]!r} (a manager without the TLS hand-out hook?)") from None
        except (TypeError, ValueError) as exc:
            raise TLSError(f"meta.tls is malformed: {exc}") from None
        for secret in (read_secret, write_secret):
            if len(secret) != suite.hash_len:
                raise TLSError(f"meta.tls traffic secret has {len(secret)} bytes, {suite.name} needs {suite.hash_len}")
        return cls(suite, read_secret, write_secret, read_seq, write_seq, pending, version, read_key_iv, write_key_iv)


def _key_iv(tls: dict[str, Any], side: str) -> tuple[bytes, bytes] | None:
    """(key, IV) of ``side``'s current secret when the sender put them in meta.tls (``<side>_key``/``_iv``)."""
    key, iv = tls.get(f"{side}_key"), tls.get(f"{side}_iv")
    if key is None and iv is None:
        return None
    if not isinstance(key, str) or not isinstance(iv, str):
        raise ValueError(f"{side}_key and {side}_iv go together, as hex")
    return bytes.fromhex(key), bytes.fromhex(iv)


class TLSSession:
    """A TLS 1.3 session continued on an already-connected socket (client side).

    Blocking socket semantics: ``recv`` returns b"" after the peer's close_notify (or a
    TCP EOF); ``settimeout``/``gettimeout``/``fileno``/``getpeername`` pass through.
    """

    def __init__(self, sock: socket.socket, params: SessionParams) -> None:
        self.sock = sock
        self.suite = params.suite
        self.reader = Direction(params.suite, params.read_secret, params.read_seq, False, params.read_key_iv)
        self.writer = Direction(params.suite, params.write_secret, params.write_seq, True, params.write_key_iv)
        self._plain = bytearray(params.pending_plaintext)
        self._raw = bytearray()
        self._handshake = bytearray()
        self.eof = False
        self.closed = False
        self.tickets_seen = 0
        self.key_updates_received = 0
        self.key_updates_sent = 0

    # socket-like pass-throughs
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

    def __enter__(self) -> TLSSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # writing
    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        self._check_open()
        view = memoryview(data).cast("B")
        out = bytearray()
        for start in range(0, len(view), MAX_PLAINTEXT):
            out += self.writer.seal(APPLICATION_DATA, bytes(view[start : start + MAX_PLAINTEXT]))
        if out:
            self.sock.sendall(out)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        chunk = bytes(memoryview(data).cast("B")[:MAX_PLAINTEXT])
        self.sendall(chunk)
        return len(chunk)

    def key_update(self, request_peer: bool = True) -> None:
        """Send a KeyUpdate (and switch our write keys); ``request_peer`` asks the peer to update too."""
        self._check_open()
        self.sock.sendall(self.writer.seal(HANDSHAKE, bytes([KEY_UPDATE, 0, 0, 1, 1 if request_peer else 0])))
        self.writer.update()
        self.key_updates_sent += 1

    # reading
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if flags:
            raise ValueError("TLSSession.recv does not take flags")
        self._check_open()
        while not self._plain:
            if self.eof:
                return b""
            self._read_record()
        out = bytes(self._plain[:bufsize])
        del self._plain[:bufsize]
        return out

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view))
        view[: len(data)] = data
        return len(data)

    def pending(self) -> int:
        return len(self._plain)

    def _check_open(self) -> None:
        if self.closed:
            raise OSError("TLS session is closed")

    def _fill(self, n: int) -> bool:
        """Read until ``n`` raw bytes are buffered; False on EOF before any of them."""
        while len(self._raw) < n:
            chunk = self.sock.recv(max(n - len(self._raw), 16384))
            if not chunk:
                if self._raw:
                    self._fail(f"connection closed inside a TLS record ({len(self._raw)} of {n} bytes)", DECODE_ERROR)
                return False
            self._raw += chunk
        return True

    def _read_record(self) -> None:
        if not self._fill(HEADER_LEN):
            self.eof = True  # TCP EOF without close_notify: report it as EOF, like ssl's suppress_ragged_eofs
            return
        header = bytes(self._raw[:HEADER_LEN])
        try:
            length = parse_header(header)
        except TLSRecordError as exc:
            self._fail(str(exc), exc.alert)
        if not self._fill(HEADER_LEN + length):
            self._fail("connection closed inside a TLS record", DECODE_ERROR)
        body = bytes(self._raw[HEADER_LEN : HEADER_LEN + length])
        del self._raw[: HEADER_LEN + length]
        self.process_record(header, body)

    def process_record(self, header: bytes, body: bytes) -> None:
        """Decrypt and act on one complete record (also used by the manager before hand-out)."""
        outer = header[0]
        if outer == ALERT and len(body) == 2:
            # An unprotected alert: a peer that lost the keys, or one that fails early.
            self._peer_alert(body[1], encrypted=False)
            return
        if outer != APPLICATION_DATA:
            self._fail(f"unprotected TLS record (content type {outer}) after the handshake", UNEXPECTED_MESSAGE)
        try:
            ctype, content = self.reader.open(header, body)
        except TLSRecordError as exc:
            self._fail(str(exc), exc.alert)
        if ctype == APPLICATION_DATA:
            if self._handshake:
                self._fail("application data inside a fragmented handshake message", UNEXPECTED_MESSAGE)
            self._plain += content
        elif ctype == HANDSHAKE:
            self._handshake += content
            self._handle_handshake()
        elif ctype == ALERT:
            if len(content) != 2:
                self._fail("malformed TLS alert", DECODE_ERROR)
            self._peer_alert(content[1], encrypted=True)
        else:
            self._fail(f"unexpected TLS content type {ctype} after the handshake", UNEXPECTED_MESSAGE)

    def _handle_handshake(self) -> None:
        buf = self._handshake
        while len(buf) >= 4:
            msg_type = buf[0]
            length = int.from_bytes(buf[1:4], "big")
            if length > MAX_PLAINTEXT * 4:
                self._fail(f"post-handshake message of {length} bytes", DECODE_ERROR)
            if len(buf) < 4 + length:
                return  # continues in the next record
            body = bytes(buf[4 : 4 + length])
            del buf[: 4 + length]
            if msg_type == NEW_SESSION_TICKET:
                self.tickets_seen += 1  # resumption is not used: nothing to keep
            elif msg_type == KEY_UPDATE:
                if length != 1 or body[0] not in (0, 1):
                    self._fail("malformed KeyUpdate", DECODE_ERROR)
                if buf:
                    self._fail("KeyUpdate not at a record boundary", UNEXPECTED_MESSAGE)
                self.reader.update()
                self.key_updates_received += 1
                if body[0] == 1:
                    self.key_update(request_peer=False)
            else:
                self._fail(f"unexpected post-handshake message type {msg_type}", UNEXPECTED_MESSAGE)

    def _peer_alert(self, description: int, encrypted: bool) -> None:
        if description == CLOSE_NOTIFY:
            self.eof = True
            return
        if description == USER_CANCELED:
            return  # a warning; close_notify follows
        self._drop()
        raise TLSAlertReceived(description, encrypted)

    def _fail(self, message: str, alert: int) -> Any:
        """Send a fatal alert (best effort), drop the connection, raise."""
        if not self.closed:
            with contextlib.suppress(OSError, TLSError):
                self.sock.send(self.writer.seal(ALERT, bytes([2, alert])), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        self._drop()
        raise TLSRecordError(message, alert)

    def _drop(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()

    def close(self) -> None:
        """Send close_notify and close the socket."""
        if self.closed:
            return
        with contextlib.suppress(OSError, TLSError):
            self.sock.send(self.writer.seal(ALERT, bytes([1, CLOSE_NOTIFY])), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        self._drop()

    def detach_state(self) -> SessionParams:
        """The session's current parameters (for handing it on once more)."""
        return SessionParams(
            self.suite,
            self.reader.secret,
            self.writer.secret,
            self.reader.seq,
            self.writer.seq,
            bytes(self._plain),
        )


def continue_session(sock: socket.socket, tls_meta: dict[str, Any]) -> TLSSession:
    """The acquire reply's ``meta.tls`` + the received socket -> a usable TLS session."""
    return TLSSession(sock, SessionParams.from_meta(tls_meta))


class RelayCodec:
    """A continued session terminated for a byte relay (``components.relay``'s codec): the caller's
    side carries plaintext, the server's side this session's records. The keys stay in this process.

    ``seal`` protects what the caller sends; ``open`` takes raw bytes from the server (any split,
    partial records wait for the rest) and returns the application data; post-handshake messages
    are handled as ``TLSSession`` handles them, and what the session writes in answer (a KeyUpdate)
    queues for ``take_out``. ``ended`` turns true at the server's close_notify; ``close_out`` is our
    close_notify when the caller ends. An alert or a bad record raises (the relay resets).
    """

    def __init__(self, session: TLSSession) -> None:
        self.session = session
        self._raw = bytearray(session._raw)
        session._raw.clear()
        self._out = bytearray()
        session.sock = self  # type: ignore[assignment]  # the session's own writes queue here

    # what TLSSession calls on its socket
    def sendall(self, data: bytes) -> None:
        self._out += data

    def send(self, data: bytes, _flags: int = 0) -> int:
        self._out += data
        return len(data)

    def close(self) -> None:
        pass

    # the relay's side
    @property
    def ended(self) -> bool:
        return self.session.eof

    def initial(self) -> bytes:
        """Application bytes decrypted before the relay started (normally none)."""
        plain = bytes(self.session._plain)
        self.session._plain.clear()
        return plain + self.open(b"") if self._raw else plain

    def seal(self, data: bytes) -> bytes:
        self.session._check_open()
        writer = self.session.writer
        return b"".join(
            writer.seal(APPLICATION_DATA, data[start : start + MAX_PLAINTEXT])
            for start in range(0, len(data), MAX_PLAINTEXT)
        )

    def open(self, data: bytes) -> bytes:
        raw = self._raw
        raw += data
        session = self.session
        while len(raw) >= HEADER_LEN and not session.eof:
            header = bytes(raw[:HEADER_LEN])
            length = parse_header(header)
            if len(raw) < HEADER_LEN + length:
                break
            body = bytes(raw[HEADER_LEN : HEADER_LEN + length])
            del raw[: HEADER_LEN + length]
            session.process_record(header, body)
        plain = bytes(session._plain)
        session._plain.clear()
        return plain

    def take_out(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def close_out(self) -> bytes:
        if self.session.closed:
            return b""
        self.session.closed = True
        return self.session.writer.seal(ALERT, bytes([1, CLOSE_NOTIFY]))
