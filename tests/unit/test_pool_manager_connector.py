"""The optional connector process (--connector-process): connections opened in a forked helper."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import Echo, Manager, echo_roundtrip, short_tmpdir, wait_for

from components import protocol


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_connector_hands_out_and_refills(echo: Echo) -> None:
    with short_tmpdir() as d:
        m = Manager(d / "m.sock", echo.target, 8, "--connector-process")
        try:
            kids = children(m.pid)
            assert len(kids) == 1
            for _ in range(40):
                sock, reply = protocol.acquire(m.sock_path)
                assert reply["peer"] == echo.target and sock.getblocking()
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30000  # set by the connector
                assert echo_roundtrip(sock)
                sock.close()
            wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 8, timeout=5)
            # A connection from the connector can be handed back and reused.
            sock, _ = protocol.acquire(m.sock_path)
            assert protocol.release(m.sock_path, sock)["reused"] is True
            assert m.stop(signal.SIGTERM) == 0
            wait_for(lambda: not os.path.exists(f"/proc/{kids[0]}"), timeout=5)  # no orphan left
        finally:
            m.stop()


def test_connector_death_falls_back_to_in_loop_connects(echo: Echo) -> None:
    with short_tmpdir() as d:
        m = Manager(d / "m.sock", echo.target, 4, "--connector-process")
        try:
            (kid,) = children(m.pid)
            os.kill(kid, signal.SIGKILL)
            wait_for(lambda: any(e["event"] == "connector_lost" for e in m.log_events()), timeout=5)
            for _ in range(12):
                sock, _ = protocol.acquire(m.sock_path)
                assert echo_roundtrip(sock)
                sock.close()
            wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 4, timeout=5)
            time.sleep(0.1)
            assert children(m.pid) == []  # reaped, not a zombie
        finally:
            m.stop()


def test_connector_backend_down_reports_unavailable() -> None:
    from test_pool_manager_support import dead_port

    with short_tmpdir() as d:
        m = Manager(d / "m.sock", f"127.0.0.1:{dead_port()}", 4, "--connector-process", wait_ready=False)
        try:
            m.wait_socket()
            time.sleep(0.3)
            with pytest.raises(protocol.PoolError) as exc:
                protocol.acquire(m.sock_path)
            assert exc.value.code == "backend_unavailable"
            st = m.stats()["pools"]["echo"]
            assert st["backend_up"] is False and 1 <= st["connect_failures"] < 60
        finally:
            m.stop()
