"""Shared pieces of the TLS tests: run certificates, stock-OpenSSL servers, session pairs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_pool_manager_support import REPO, env, read_json_line, stop

from components import tls13, tls_pool

SUITE_NAMES = list(tls13.SUITES)


def server_context(certs: Any, num_tickets: int | None = None, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    if num_tickets is not None:
        ctx.num_tickets = num_tickets
    if client_ca is not None:
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_config(certs: Any) -> tls_pool.TlsPoolConfig:
    return tls_pool.TlsPoolConfig(
        host="127.0.0.1",
        port=0,
        server_name="localhost",
        ca_file=str(certs.ca_cert),
        cert_file=None,
        key_file=None,
    )


class OpenSSLPeer:
    """A stock Python ``ssl`` server on one end of a socketpair, run by ``behaviour`` in a thread;
    the other end is handshaken by ``tls_pool.client_handshake`` (exactly as the manager does)."""

    def __init__(
        self,
        server_ctx: ssl.SSLContext,
        behaviour: Callable[[ssl.SSLSocket], Any],
        client_ctx: ssl.SSLContext,
    ) -> None:
        self.client_sock, server_sock = socket.socketpair()
        self.client_sock.settimeout(10)
        server_sock.settimeout(10)
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                    self.result = behaviour(tls)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.handshake = tls_pool.client_handshake(self.client_sock, client_ctx, "localhost")

    def session(self, read_seq: int = 0) -> tls13.TLSSession:
        hs = self.handshake
        return tls13.TLSSession(
            self.client_sock, tls13.SessionParams(hs.suite, hs.server_secret, hs.client_secret, read_seq, 0)
        )

    def join(self) -> Any:
        self.thread.join(10)
        assert not self.thread.is_alive(), "server thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def echo_until_eof(tls: ssl.SSLSocket) -> int:
    total = 0
    while True:
        try:
            data = tls.recv(65536)
        except ssl.SSLZeroReturnError:
            return total
        if not data:
            return total
        total += len(data)
        tls.sendall(data)


class TlsEcho:
    """``components.echo_server`` serving TLS in a subprocess; ``ciphersuites`` pins the TLS 1.3
    suites through an OpenSSL config file (Python 3.11's ssl has no set_ciphersuites)."""

    def __init__(self, certs: Any, ciphersuites: str | None = None, client_ca: Path | None = None) -> None:
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        environment = env()
        self._conf: str | None = None
        if ciphersuites:
            fd, self._conf = tempfile.mkstemp(suffix=".cnf")
            with os.fdopen(fd, "w") as fh:
                fh.write(
                    "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n[ssl_sect]\n"
                    "system_default = system_default_sect\n[system_default_sect]\n"
                    f"Ciphersuites = {ciphersuites}\n"
                )
            environment["OPENSSL_CONF"] = self._conf
        args = [sys.executable, "-m", "components.echo_server", "--host", "127.0.0.1", "--port", "0"]
        args += ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)]
        if client_ca is not None:
            args += ["--tls-client-ca", str(client_ca)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._err, env=environment, cwd=REPO)
        try:
            ready = read_json_line(self.proc, 10)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        assert ready["tls"] == "TLSv1.3"
        self.port: int = ready["port"]
        self.target = f"127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        """The server's counters (SIGUSR1 makes it print its stats line)."""
        self.proc.send_signal(signal.SIGUSR1)
        line = read_json_line(self.proc, 5)
        assert line["event"] == "stats", line
        return line

    def stop(self, sig: int = signal.SIGTERM) -> int:
        rc = stop(self.proc, sig)
        if self._conf:
            with contextlib.suppress(OSError):
                os.unlink(self._conf)
        if not self._err.closed:
            self._err.seek(0)
            self.stderr = self._err.read().decode(errors="replace")
            self._err.close()
        return rc


def session_pair(suite_name: str = "TLS_AES_128_GCM_SHA256") -> tuple[tls13.TLSSession, tls13.TLSSession]:
    """Client and server ends of one session over a socketpair, both run by our record layer."""
    suite = tls13.suite_by_name(suite_name)
    client_secret, server_secret = os.urandom(suite.hash_len), os.urandom(suite.hash_len)
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    client = tls13.TLSSession(a, tls13.SessionParams(suite, server_secret, client_secret))
    server = tls13.TLSSession(b, tls13.SessionParams(suite, client_secret, server_secret))
    return client, server
