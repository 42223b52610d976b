"""Echo server as a real process: concurrency, connection churn, large payloads, shutdown."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import contextlib

from test_pool_manager_support import Echo


def test_ready_line_and_basic_echo(echo: Echo) -> None:
    assert echo.port > 0
    with socket.create_connection(("127.0.0.1", echo.port), timeout=3) as s:
        s.sendall(b"hello\n")
        assert s.recv(100) == b"hello\n"


def test_many_concurrent_connections(echo: Echo) -> None:
    n = 600
    sel = selectors.DefaultSelector()
    socks = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", echo.port), timeout=5)
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, (i, bytearray()))
        # All connections open at once; each gets its own message back.
        for i, s in enumerate(socks):
            s.send(f"conn-{i:05d}|".encode())
        pending = n
        deadline = time.monotonic() + 15
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                i, buf = key.data
                buf += key.fileobj.recv(100)  # type: ignore[union-attr]
                if len(buf) == 11:
                    assert bytes(buf) == f"conn-{i:05d}|".encode()
                    sel.unregister(key.fileobj)
                    pending -= 1
        assert pending == 0
    finally:
        sel.close()
        for s in socks:
            s.close()


def test_connection_churn(echo: Echo) -> None:
    t0 = time.monotonic()
    n = 1500
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", echo.port), timeout=3)
        s.close()
    elapsed = time.monotonic() - t0
    assert elapsed < 15, f"{n} connect/close cycles took {elapsed:.1f}s"
    # Still answering after the churn.
    with socket.create_connection(("127.0.0.1", echo.port), timeout=3) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"


def test_large_payload_backpressure_and_half_close(echo: Echo) -> None:
    data = os.urandom(4 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", echo.port), timeout=10) as s:
        s.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        sent = 0
        got = bytearray()
        deadline = time.monotonic() + 20
        shut = False
        while time.monotonic() < deadline:
            for _key, ev in sel.select(0.5):
                if ev & selectors.EVENT_WRITE and sent < len(data):
                    with contextlib.suppress(BlockingIOError):
                        sent += s.send(data[sent : sent + 65536])
                if ev & selectors.EVENT_READ:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        deadline = 0
                        break
                    got += chunk
            if sent == len(data) and not shut:
                s.shutdown(socket.SHUT_WR)  # half-close: echoes must still arrive, then EOF
                sel.modify(s, selectors.EVENT_READ)
                shut = True
        sel.close()
    assert bytes(got) == data


def test_sigterm_exits_cleanly(echo: Echo) -> None:
    with socket.create_connection(("127.0.0.1", echo.port), timeout=3):
        rc = echo.stop(signal.SIGTERM)
        assert rc == 0, echo.stderr
