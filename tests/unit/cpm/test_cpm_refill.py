"""Pool manager, refill room: top-up, backend failures and restarts, idle sweep, socket options.

Against a real echo server, over real sockets, in real processes."""

from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from test_pool_manager_support import (
    Echo,
    Manager,
    dead_port,
    echo_roundtrip,
    wait_for,
)

from components import protocol


def test_refill_after_handouts(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 6)
    held = [protocol.acquire(m.sock_path)[0] for _ in range(6)]
    try:
        wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 6, timeout=5)
        st = m.stats()["pools"]["echo"]
        assert st["refills"] >= 12
        assert st["handed_out"] == 6
    finally:
        for s in held:
            s.close()


def test_backend_restart_never_hands_out_dead_connections(sockdir: Path) -> None:
    echo = Echo()
    port = echo.port
    m = Manager(sockdir / "m.sock", echo.target, 5, "--exhaustion", "connect", "--borrow-timeout", "0.5")
    try:
        echo.stop(signal.SIGKILL)  # backend dies: every pooled connection is now closed by the peer
        time.sleep(0.2)
        # Nothing dead is handed out: either refused with backend_unavailable or not at all.
        for _ in range(5):
            with pytest.raises(protocol.PoolError) as exc:
                sock, _ = protocol.acquire(m.sock_path)
                sock.close()
            assert exc.value.code in ("backend_unavailable", "pool_exhausted")
        st = m.stats()["pools"]["echo"]
        assert st["discard_health"] >= 5
        assert st["backend_up"] is False
        echo = Echo(port)  # same address comes back
        wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 5, timeout=8)
        for _ in range(10):
            sock, _ = protocol.acquire(m.sock_path)
            assert echo_roundtrip(sock)
            sock.close()
        assert m.stats()["pools"]["echo"]["backend_up"] is True
    finally:
        m.stop()
        echo.stop()


def test_backend_down_no_busy_loop_and_backend_unavailable(start_manager: Callable[..., Manager]) -> None:
    m = start_manager(f"127.0.0.1:{dead_port()}", 4, wait_ready=False)
    m.wait_socket()
    time.sleep(0.3)
    cpu0 = m.cpu_seconds()
    time.sleep(1.0)
    used = m.cpu_seconds() - cpu0
    assert used < 0.15, f"manager burned {used:.2f}s CPU in 1s with the backend down"
    with pytest.raises(protocol.PoolError) as exc:
        protocol.acquire(m.sock_path)
    assert exc.value.code == "backend_unavailable"
    st = m.stats()["pools"]["echo"]
    assert st["backend_up"] is False and st["connect_failures"] >= 1
    # Backoff: a handful of attempts per second, not thousands.
    assert st["connect_failures"] < 60
    assert any(e["event"] == "connect_failed" for e in m.log_events())


def test_health_sweep_replaces_connections_closed_by_backend(start_manager: Callable[..., Manager]) -> None:
    # A backend that accepts and immediately closes every connection.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    target = f"127.0.0.1:{srv.getsockname()[1]}"
    m = start_manager(target, 3, "--health-interval", "0.2")
    srv.settimeout(3)
    for _ in range(3):
        c, _ = srv.accept()
        c.close()
    srv.close()
    time.sleep(0.3)
    with pytest.raises(protocol.PoolError):
        protocol.acquire(m.sock_path)
    assert m.stats()["pools"]["echo"]["discard_health"] >= 3


def test_keepalive_and_user_timeout_set_before_handout(echo: Echo, start_manager: Callable[..., Manager]) -> None:
    m = start_manager(echo.target, 1)
    sock, _ = protocol.acquire(m.sock_path)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30000
    finally:
        sock.close()


def _in_flight(st: dict) -> int:
    """Connections being opened or settling: a refill has started."""
    return int(st["connecting"]) + int(st["settling"])


def test_refill_after_a_handout_waits_until_the_caller_is_served(
    echo: Echo, start_manager: Callable[..., Manager]
) -> None:
    """The fast path: the reply goes out and the manager goes back to its loop before topping the pool
    up, so a caller woken by the reply does not queue behind the manager's connect on the same CPU."""
    m = start_manager(echo.target, 8, "--refill-defer-ms", "1000")
    sock, _reply = protocol.acquire(m.sock_path)
    try:
        st = m.stats()["pools"]["echo"]  # served by the same loop right after the hand-out
        assert st["idle"] == 7 and _in_flight(st) == 0, st
        wait_for(lambda: m.stats()["pools"]["echo"]["idle"] == 8, timeout=10)  # the deferred refill came
    finally:
        sock.close()


def test_refill_is_immediate_when_deferral_is_off_or_the_pool_runs_low(
    echo: Echo, start_manager: Callable[..., Manager]
) -> None:
    at_once = start_manager(echo.target, 8, "--refill-defer-ms", "0", name="now.sock")
    sock, _reply = protocol.acquire(at_once.sock_path)
    try:
        st = at_once.stats()["pools"]["echo"]
        assert st["idle"] + _in_flight(st) == 8, st  # the refill started before the stats request was read
    finally:
        sock.close()
    deferred = start_manager(echo.target, 4, "--refill-defer-ms", "1000", name="low.sock")
    held = [protocol.acquire(deferred.sock_path)[0] for _ in range(3)]
    try:
        st = deferred.stats()["pools"]["echo"]
        # down to one of four (below half): the last hand-outs refilled at once, deferral or not
        assert _in_flight(st) + st["idle"] >= 2, st
    finally:
        for s in held:
            s.close()


def test_refill_defer_config_is_validated(sockdir: Path) -> None:
    from components.pool_config import ConfigError, load_config

    cfg = load_config(["--socket", str(sockdir / "x.sock"), "--target", "127.0.0.1:1", "--refill-defer-ms", "5"])
    assert cfg.refill_defer_ms == 5
    with pytest.raises(ConfigError, match="refill_defer_ms"):
        load_config(["--socket", str(sockdir / "x.sock"), "--target", "127.0.0.1:1", "--refill-defer-ms", "-1"])
