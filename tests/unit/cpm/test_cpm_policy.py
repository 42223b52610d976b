"""Pool manager, pool policy room: hand-out, health at hand-out, exhaustion, TTL, release verdicts.

Against a real echo server, over real sockets, in real processes."""

from __future__ import annotations

import array
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from test_pool_manager_support import (
    Echo,
    Manager,
    echo_roundtrip,
    error_of,
    wait_for,
)

from components import protocol


def test_acquire_hands_out_connected_blocking_sockets(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 4)
    ids = set()
    for _ in range(12):  # more than the pool holds: refill must keep up
        sock, reply = protocol.acquire(m.sock_path)
        try:
            assert reply["ok"] is True and reply["pool"] == "echo" and reply["meta"] == {}
            assert reply["peer"] == echo.target
            assert protocol.format_peer(sock.getpeername()) == echo.target
            assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
            assert sock.getblocking()
            assert os.get_inheritable(sock.fileno()) is False  # arrived with MSG_CMSG_CLOEXEC
            assert echo_roundtrip(sock, f"hello {reply['id']}\n".encode())
            ids.add(reply["id"])
        finally:
            sock.close()
    assert len(ids) == 12
    st = m.stats()
    assert st["pools"]["echo"]["handed_out"] == 12


def test_exhaustion_policies(start_manager: Callable[..., Manager]) -> None:
    # A listener that never accepts: its backlog fills, then connects hang (SYNs dropped).
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    target = f"127.0.0.1:{srv.getsockname()[1]}"
    try:
        refuse = start_manager(target, 1, "--exhaustion", "refuse", name="r.sock")
        held, _ = protocol.acquire(refuse.sock_path)
        t0 = time.monotonic()
        with pytest.raises(protocol.PoolError) as exc:
            protocol.acquire(refuse.sock_path)
        assert exc.value.code == "pool_exhausted"
        assert time.monotonic() - t0 < 0.3
        held.close()
        refuse.stop()

        wait = start_manager(
            target, 1, "--exhaustion", "wait", "--borrow-timeout", "0.4", wait_ready=False, name="w.sock"
        )
        wait.wait_socket()
        time.sleep(0.3)
        t0 = time.monotonic()
        with pytest.raises(protocol.PoolError) as exc:
            for _ in range(3):
                s, _ = protocol.acquire(wait.sock_path)
                s.close()
        waited = time.monotonic() - t0
        assert exc.value.code in ("pool_exhausted", "backend_unavailable")
        assert 0.3 < waited < 2.0
        assert wait.stats()["pools"]["echo"]["borrow_timeouts"] >= 1
    finally:
        srv.close()


def test_ttl_and_max_idle(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 4, "--ttl", "0.4", "--health-interval", "0.1")
    wait_for(lambda: m.stats()["pools"]["echo"]["discard_ttl"] >= 4, timeout=3)
    wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 4, timeout=3)

    m2 = start_manager(
        echo.target, 6, "--max-idle", "0.3", "--min-idle", "2", "--health-interval", "0.1", name="m2.sock"
    )
    wait_for(lambda: m2.stats()["pools"]["echo"]["idle"] == 2, timeout=3)
    assert m2.stats()["pools"]["echo"]["discard_idle"] >= 4
    sock, _ = protocol.acquire(m2.sock_path)  # demand returns: refill back to size
    sock.close()
    wait_for(lambda: m2.stats()["pools"]["echo"]["idle"] == 6, timeout=3)


def _release(m: Manager, sock: socket.socket) -> dict[str, Any]:
    return protocol.release(m.sock_path, sock)


def test_release_healthy_connection_is_reused(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    sock, _reply = protocol.acquire(m.sock_path)
    local = sock.getsockname()
    assert echo_roundtrip(sock)
    out = _release(m, sock)
    assert out["ok"] is True and out["reused"] is True
    assert sock.fileno() == -1  # our copy is closed
    st = m.stats()["pools"]["echo"]
    assert st["released_reused"] == 1
    # The returned connection is handed out again (it waits at the back of the queue).
    seen = []
    for _ in range(4):
        s, _ = protocol.acquire(m.sock_path)
        seen.append(s.getsockname())
        assert echo_roundtrip(s)
        s.close()
    assert local in seen


def test_release_with_unread_data_is_discarded(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    sock, _ = protocol.acquire(m.sock_path)
    sock.sendall(b"unanswered\n")  # the echo comes back and is never read
    time.sleep(0.2)
    out = _release(m, sock)
    assert out == {"ok": True, "op": "release", "pool": "echo", "reused": False, "reason": "unread_data"}
    assert m.stats()["pools"]["echo"]["discard_release"] == 1


def test_release_half_closed_is_discarded(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    sock, _ = protocol.acquire(m.sock_path)
    sock.shutdown(socket.SHUT_WR)
    time.sleep(0.1)
    out = _release(m, sock)
    # Depending on how far the close got: our FIN sent (half_closed), the peer's FIN seen (eof),
    # or both done and the socket in TIME_WAIT (not_connected). Never reused.
    assert out["reused"] is False and out["reason"] in ("half_closed", "eof", "not_connected")


def test_release_of_foreign_connection_is_refused(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2)
    own = socket.create_connection(("127.0.0.1", echo.port))
    out = _release(m, own)
    assert out["reused"] is False and out["reason"] == "unknown_connection"
    r, w = os.pipe()
    os.close(w)
    pipe_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # A non-socket fd is refused too.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(m.sock_path)
    s.sendmsg(
        [protocol.encode_request("release", pool="echo")],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]).tobytes())],
    )
    s.settimeout(3)
    assert error_of(s.recv(4096)) == "bad_request"
    s.close()
    os.close(r)
    pipe_sock.close()


def test_release_disabled(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 2, "--no-release")
    sock, _ = protocol.acquire(m.sock_path)
    out = _release(m, sock)
    assert out["reused"] is False and out["reason"] == "release_disabled"


def test_fd_count_stable_over_many_handouts(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    size = 16
    m = start_manager(echo.target, size)
    before = m.open_fds()
    from components.loadgen import run

    result = run(m.sock_path, clients=3, duration=2.0, pool="echo", echo=False, timeout=2.0)
    assert result["failures"] == 0, result
    # Many times the pool's size, so every slot is refilled repeatedly; a count, not a rate,
    # because a loaded machine may serve a few hundred acquires in those 2 s.
    assert result["count"] >= 10 * size, result
    wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == size, timeout=5)
    after = m.open_fds()
    assert abs(after - before) <= size, (before, after)
    st = m.stats()
    assert st["pools"]["echo"]["handed_out"] == result["count"]
    assert st["acquire_latency_us"]["count"] == result["count"]


def test_unix_listening_tells_a_bound_socket_from_a_listening_one(tmp_path: Path) -> None:
    from coldstart_bench.measure.host_processes import unix_listening

    path = str(tmp_path / "s.sock")
    assert not unix_listening(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        assert not unix_listening(path)  # the file exists, but a connect would be refused
        s.listen()
        assert unix_listening(path)
