"""TLS for the function (``--transport tls``): handshake itself (direct) or continue the injected session.

direct: after resolve + TCP connect, ``import ssl`` (``ssl_import_us``), a client context
        verifying the server against ``--tls-ca`` (``tls_context_us``), and the TLS 1.3
        handshake with certificate and host name verification (``tls_handshake_us``).
socket: the acquire reply's ``meta.tls`` carries the session's traffic secrets and sequence
        numbers; ``components.tls13`` continues it on the received fd (``tls_setup_us``: import,
        libcrypto binding, key derivation; of it ``tls_library_us`` is the library load: the
        import, the libcrypto binding and OpenSSL's first fetch of the suite's cipher). With
        kernel TLS installed by the manager (``meta.tls.path == "ktls"``) the fd already speaks
        plaintext; relayed (``meta.tls.path == "relay"``) the fd is an AF_UNIX socket carrying
        plaintext to the manager, which keeps the keys and seals the records.

Secrets never go into the record: only the suite, the path and the sequence numbers.
"""

from __future__ import annotations

import socket
import time
from typing import Any


def direct_handshake(
    sock: socket.socket, opts: dict[str, Any], server_host: str, started_ns: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """TLS 1.3 client handshake on a connected socket; returns the SSLSocket and timings (µs).
    ``started_ns`` (perf_counter) is when the caller began importing this module: counted in
    ``ssl_import_us``."""
    t0 = started_ns if started_ns is not None else time.perf_counter_ns()
    import ssl

    t1 = time.perf_counter_ns()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if opts.get("tls_ca"):
        ctx.load_verify_locations(cafile=opts["tls_ca"])
    else:
        ctx.load_default_certs()
    if opts.get("tls_cert"):
        ctx.load_cert_chain(opts["tls_cert"], opts.get("tls_key"))
    t2 = time.perf_counter_ns()
    sock.settimeout(opts["timeout"])
    tls = ctx.wrap_socket(sock, server_hostname=opts.get("tls_server_name") or server_host)
    t3 = time.perf_counter_ns()
    cipher = tls.cipher()
    info = {
        "ssl_import_us": (t1 - t0) / 1000,
        "tls_context_us": (t2 - t1) / 1000,
        "tls_handshake_us": (t3 - t2) / 1000,
        "tls_version": tls.version(),
        "tls_cipher_suite": cipher[0] if cipher else None,
        "tls_path": "handshake",
    }
    return tls, info


def continue_injected(
    sock: socket.socket, reply: dict[str, Any], started_ns: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """The session described by ``reply['meta']['tls']`` on the injected socket; ``tls_setup_us``
    runs from ``started_ns`` (perf_counter, when the caller began importing this module)."""
    t0 = started_ns if started_ns is not None else time.perf_counter_ns()
    meta = reply.get("meta") or {}
    tls_meta = meta.get("tls")
    if not isinstance(tls_meta, dict):
        raise ValueError(f"pool {reply.get('pool')!r} handed out no TLS session (meta.tls missing)")
    path = tls_meta.get("path", "record_layer")
    info: dict[str, Any] = {
        "tls_version": tls_meta.get("version"),
        "tls_cipher_suite": tls_meta.get("cipher_suite"),
        "tls_path": path,
        "tls_server_seq": tls_meta.get("server_seq"),
        "tls_client_seq": tls_meta.get("client_seq"),
    }
    if path == "relay":
        if meta.get("handoff") != "relay" or sock.family != socket.AF_UNIX:
            raise ValueError("meta.tls.path is relay but the pool did not relay the connection")
        info["tls_setup_us"] = (time.perf_counter_ns() - t0) / 1000
        return sock, info
    if path == "ktls":
        if tls_meta.get("plaintext"):
            raise ValueError("kernel TLS hand-out with already-decrypted bytes is not supported")
        from components.ktls_socket import KernelTlsSocket  # no crypto: alerts and KeyUpdate as clear errors

        ktls_sock = KernelTlsSocket(sock)
        info["tls_setup_us"] = (time.perf_counter_ns() - t0) / 1000
        return ktls_sock, info
    from components import tls13

    suite = tls13.SUITES.get(str(tls_meta.get("cipher_suite")))
    if suite is not None:  # else continue_session names the problem
        tls13._LibCrypto.get().cipher(suite.evp_cipher)
    info["tls_library_us"] = (time.perf_counter_ns() - t0) / 1000
    session = tls13.continue_session(sock, tls_meta)
    info["tls_setup_us"] = (time.perf_counter_ns() - t0) / 1000
    return session, info
