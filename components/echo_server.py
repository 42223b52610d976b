"""TCP echo server: every byte received is sent back on the same connection.

One thread, one epoll loop, non-blocking sockets. Accepts are drained in batches
so thousands of new connections per second (the pool manager refilling behind
single-use hand-outs) cost one wake-up per batch, not one per connection.

With ``--tls-cert``/``--tls-key`` it serves TLS 1.3 only (stdlib ``ssl``, handshakes driven by
the same loop) and counts the TLS sessions it accepted: SIGUSR1 prints a stats line
``{"event": "stats", "tls_sessions": N, ...}`` on stdout, and so does a clean exit.
"""

from __future__ import annotations

import _socket
import argparse
import contextlib
import errno
import json
import select
import signal
import socket
import sys
from types import FrameType
from typing import Any

READ_SIZE = 65536
_DONTWAIT = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
ACCEPT_BATCH = 512


class _Stop(Exception):
    pass


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


class EchoServer:
    def __init__(self, host: str, port: int, backlog: int = 4096) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        # The kernel caps this at net.core.somaxconn; asking high costs nothing.
        self.listener.listen(backlog)
        self.listener.setblocking(False)
        self.ep = select.epoll()
        self.ep.register(self.listener.fileno(), select.EPOLLIN)
        self.conns: dict[int, _socket.socket] = {}
        self.family = family
        self.pending: dict[int, bytearray] = {}

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                # _accept() + the C socket type: no per-connection Python wrapper work.
                fd, _addr = self.listener._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # EMFILE/ENFILE or an aborted handshake: keep serving existing connections.
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                return
            # Left in blocking mode: every recv/send passes MSG_DONTWAIT, which saves a syscall per connection.
            self.conns[fd] = _socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
            self.ep.register(fd, select.EPOLLIN)

    def _close(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        self.pending.pop(fd, None)
        if conn is not None:
            # close() also drops the epoll registration: no other copy of this descriptor exists.
            conn.close()

    def _send(self, fd: int, conn: _socket.socket, data: bytes | bytearray) -> None:
        buf = self.pending.get(fd)
        if buf is not None:
            buf += data
            return
        try:
            sent = conn.send(data, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(fd)
            return
        if sent < len(data):
            # Stop reading until the peer drains its echoes (backpressure).
            self.pending[fd] = bytearray(data[sent:])
            self.ep.modify(fd, select.EPOLLOUT)

    def _writable(self, fd: int) -> None:
        conn = self.conns[fd]
        buf = self.pending[fd]
        try:
            sent = conn.send(buf, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(fd)
            return
        del buf[:sent]
        if not buf:
            del self.pending[fd]
            self.ep.modify(fd, select.EPOLLIN)

    def serve_forever(self) -> None:
        lfd = self.listener.fileno()
        poll = self.ep.poll
        conns = self.conns
        pending = self.pending
        accept = self._accept
        while True:
            for fd, ev in poll(-1, 1024):
                if fd == lfd:
                    accept()
                    continue
                conn = conns.get(fd)
                if conn is None:
                    continue
                if ev & select.EPOLLOUT:
                    self._writable(fd)
                    continue
                # IN, HUP or ERR: read first; data sent before a FIN must still be echoed.
                try:
                    data = conn.recv(READ_SIZE, _DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    # Inline close: the common end of every pooled connection.
                    del conns[fd]
                    pending.pop(fd, None)
                    conn.close()
                    continue
                self._send(fd, conn, data)

    def close(self) -> None:
        for fd in list(self.conns):
            self._close(fd)
        self.ep.close()
        self.listener.close()


class _TlsConn:
    """One TLS connection: handshaking, then echoing (with its own unsent-bytes buffer)."""

    __slots__ = ("established", "out", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.established = False
        self.out = bytearray()


class TlsEchoServer:
    """The echo protocol over TLS 1.3; counts accepted (handshake completed) sessions."""

    def __init__(self, host: str, port: int, cert: str, key: str, backlog: int = 4096, ca: str | None = None) -> None:
        import ssl

        self.ssl = ssl
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.load_cert_chain(cert, key)
        if ca:
            # Mutual TLS: clients must present a certificate from this CA.
            self.ctx.load_verify_locations(cafile=ca)
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(backlog)
        self.listener.setblocking(False)
        self.ep = select.epoll()
        self.ep.register(self.listener.fileno(), select.EPOLLIN)
        self.conns: dict[int, _TlsConn] = {}
        self.stats = {"tls_sessions": 0, "tls_handshake_failures": 0, "tls_errors": 0, "closed": 0}

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def stats_line(self) -> str:
        return json.dumps({"event": "stats", **self.stats, "open": len(self.conns)})

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            conn = _TlsConn(tls)
            self.conns[tls.fileno()] = conn
            self.ep.register(tls.fileno(), select.EPOLLIN)
            self._step(tls.fileno(), conn)

    def _close(self, fd: int, conn: _TlsConn) -> None:
        self.conns.pop(fd, None)
        self.stats["closed"] += 1
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(fd)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _step(self, fd: int, conn: _TlsConn) -> None:
        ssl = self.ssl
        want_write = False
        try:
            if not conn.established:
                try:
                    conn.sock.do_handshake()
                except ssl.SSLWantReadError:
                    return
                except ssl.SSLWantWriteError:
                    self.ep.modify(fd, select.EPOLLOUT)
                    return
                except (ssl.SSLError, OSError):
                    self.stats["tls_handshake_failures"] += 1
                    self._close(fd, conn)
                    return
                conn.established = True
                self.stats["tls_sessions"] += 1
            while True:
                if conn.out:
                    try:
                        sent = conn.sock.send(conn.out)
                    except ssl.SSLWantWriteError:
                        want_write = True
                        break
                    del conn.out[:sent]
                    continue
                try:
                    data = conn.sock.recv(READ_SIZE)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLWantWriteError:
                    want_write = True
                    break
                if not data:
                    self._close(fd, conn)
                    return
                conn.out += data
        except (ssl.SSLError, OSError):
            self.stats["tls_errors"] += 1
            self._close(fd, conn)
            return
        self.ep.modify(fd, select.EPOLLOUT if want_write else select.EPOLLIN)

    def serve_forever(self) -> None:
        lfd = self.listener.fileno()
        while True:
            for fd, _ev in self.ep.poll(-1, 1024):
                if fd == lfd:
                    self._accept()
                    continue
                conn = self.conns.get(fd)
                if conn is not None:
                    self._step(fd, conn)

    def close(self) -> None:
        for fd, conn in list(self.conns.items()):
            self._close(fd, conn)
        self.ep.close()
        self.listener.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.echo_server", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=7000, help="0 picks a free port (printed when ready)")
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--tls-cert", help="serve TLS 1.3 with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
    parser.add_argument("--tls-client-ca", help="require client certificates issued by this CA (mutual TLS)")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigterm)
    server: EchoServer | TlsEchoServer
    if args.tls_cert:
        tls_server = server = TlsEchoServer(
            args.host, args.port, args.tls_cert, args.tls_key, args.backlog, args.tls_client_ca
        )

        def on_usr1(_signum: int, _frame: FrameType | None) -> None:
            sys.stdout.write(tls_server.stats_line() + "\n")
            sys.stdout.flush()

        signal.signal(signal.SIGUSR1, on_usr1)
    else:
        server = EchoServer(args.host, args.port, args.backlog)
    host, port = server.address
    try:
        # Inside the try: a SIGTERM may land as soon as the reader has seen this line.
        ready: dict[str, Any] = {"event": "ready", "host": host, "port": port}
        if args.tls_cert:
            ready["tls"] = "TLSv1.3"
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        server.serve_forever()
    except _Stop:
        pass
    finally:
        # A second signal must not interrupt the clean-up.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if isinstance(server, TlsEchoServer):
            sys.stdout.write(server.stats_line() + "\n")
            sys.stdout.flush()
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
