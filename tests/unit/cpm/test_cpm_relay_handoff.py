"""Relay hand-off in the real manager process: an AF_UNIX end in the grant, bytes relayed to the backend."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_pool_manager_support import Echo, Manager, error_of, raw_exchange, wait_for

from components import protocol
from components.cpm.relaying import with_relay_meta
from components.pool_config import ConfigError, ManagerConfig, PoolConfig


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.stop()


def acquire_relay(path: str, **fields: Any) -> tuple[socket.socket, dict[str, Any]]:
    reply, fd = protocol._exchange(path, protocol.encode_request("acquire", pool="echo", **fields), 3.0)
    assert fd is not None, reply
    return socket.socket(fileno=fd), reply


def relay_stats(m: Manager) -> dict[str, Any]:
    return dict(m.stats()["relay"])


def test_grant_carries_unix_end_and_relay_meta(start_manager: Callable[..., Manager], echo: Echo) -> None:
    m = start_manager(echo.target, 2)
    sock, reply = acquire_relay(m.sock_path, handoff="relay")
    with sock:
        assert sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM
        assert reply["meta"] == {"handoff": "relay"}
        assert reply["peer"].startswith("127.0.0.1:")  # still where the bytes go
        sock.sendall(b"ping\n")
        assert sock.recv(16) == b"ping\n"
    wait_for(lambda: relay_stats(m)["closed"] == 1)
    stats = m.stats()
    assert stats["pools"]["echo"]["relayed"] == 1
    assert stats["relay"]["bytes_a_to_b"] == 5 and stats["relay"]["bytes_b_to_a"] == 5


def test_random_payloads_both_ways_arrive_intact(start_manager: Callable[..., Manager], echo: Echo) -> None:
    m = start_manager(echo.target, 4)
    warm, _ = acquire_relay(m.sock_path, handoff="relay")  # the hub (3 fds of its own) is made on first use
    warm.close()
    wait_for(lambda: relay_stats(m)["closed"] == 1 and m.stats()["pools"]["echo"]["idle"] == 4)
    wait_for(lambda: m.stats()["pools"]["echo"]["connecting"] == 0)
    before = m.open_fds()
    payloads = [os.urandom(n) for n in (1, 4096, 65_537, 1 << 20)]
    for payload in payloads:
        sock, _ = acquire_relay(m.sock_path, handoff="relay")
        sock.settimeout(10)
        got = bytearray()

        def read_all(s: socket.socket = sock, out: bytearray = got) -> None:
            while chunk := s.recv(65536):
                out.extend(chunk)

        reader = threading.Thread(target=read_all)
        reader.start()  # read while writing: the echo sends back as we send (back-pressure both ways)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # half-close: the echo still answers everything sent
        reader.join(20)
        assert not reader.is_alive()
        sock.close()
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest(), len(got)
    wait_for(lambda: relay_stats(m)["closed"] == 1 + len(payloads))
    stats = relay_stats(m)
    assert stats["bytes_a_to_b"] == stats["bytes_b_to_a"] == sum(map(len, payloads))
    assert stats["cpu_ms_per_mb"] is not None and stats["active"] == 0

    # Every relay's 6 descriptors are gone again (the pool refilled to the same size).
    def settled() -> bool:
        pool = m.stats()["pools"]["echo"]
        return pool["idle"] == 4 and pool["connecting"] == 0 and m.open_fds() == before

    wait_for(settled, timeout=10)


def test_caller_reset_resets_backend(start_manager: Callable[..., Manager]) -> None:
    backend = socket.create_server(("127.0.0.1", 0))
    m = start_manager(f"127.0.0.1:{backend.getsockname()[1]}", 1)
    backend.settimeout(5)
    conns = [backend.accept()[0]]
    sock, _ = acquire_relay(m.sock_path, handoff="relay")
    # Backend sends data the caller never reads; closing with unread data resets the AF_UNIX pair.
    conns[0].sendall(b"unread")
    wait_for(lambda: sock.recv(6, socket.MSG_PEEK) == b"unread")
    sock.close()
    conns[0].settimeout(5)
    with pytest.raises(ConnectionResetError):
        while conns[0].recv(1024):
            pass
    wait_for(lambda: relay_stats(m)["reset"] == 1)
    for c in conns:
        c.close()
    backend.close()


def test_backend_close_gives_caller_eof_after_last_byte(start_manager: Callable[..., Manager]) -> None:
    backend = socket.create_server(("127.0.0.1", 0))
    m = start_manager(f"127.0.0.1:{backend.getsockname()[1]}", 1)
    backend.settimeout(5)
    far, _ = backend.accept()
    sock, _ = acquire_relay(m.sock_path, handoff="relay")
    sock.settimeout(5)
    far.sendall(b"last words")
    far.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := sock.recv(64):
        got += chunk
    assert got == b"last words"
    sock.sendall(b"still open the other way")  # half-closed: caller -> backend keeps flowing
    sock.shutdown(socket.SHUT_WR)
    far.settimeout(5)
    got = b""
    while chunk := far.recv(64):
        got += chunk
    assert got == b"still open the other way"
    wait_for(lambda: relay_stats(m)["closed"] == 1)
    sock.close()
    far.close()
    backend.close()


def test_pool_setting_relays_plain_acquires(start_manager: Callable[..., Manager], echo: Echo) -> None:
    m = start_manager(echo.target, 2, "--handoff", "relay")
    sock, reply = protocol.acquire(m.sock_path)  # the plain, fast-path line
    with sock:
        assert sock.family == socket.AF_UNIX and reply["meta"]["handoff"] == "relay"
        sock.sendall(b"x\n")
        assert sock.recv(4) == b"x\n"
    # A request field wins over the pool setting.
    sock, reply = acquire_relay(m.sock_path, handoff="inject")
    with sock:
        assert sock.family == socket.AF_INET and "handoff" not in reply["meta"]


def test_bad_handoff_value_is_bad_request(start_manager: Callable[..., Manager], echo: Echo) -> None:
    m = start_manager(echo.target, 1)
    line = json.dumps({"v": 1, "op": "acquire", "pool": "echo", "handoff": "splice"}).encode() + b"\n"
    assert error_of(raw_exchange(m.sock_path, line)) == "bad_request"


def test_relay_limit_refuses_with_pool_exhausted(start_manager: Callable[..., Manager], echo: Echo) -> None:
    m = start_manager(echo.target, 3, "--max-relays", "1")
    first, _ = acquire_relay(m.sock_path, handoff="relay")
    line = protocol.encode_request("acquire", pool="echo", handoff="relay")
    reply = raw_exchange(m.sock_path, line)
    assert error_of(reply) == "pool_exhausted" and b"relay limit" in reply
    assert m.stats()["pools"]["echo"]["relay_refused"] == 1
    first.close()
    wait_for(lambda: relay_stats(m)["closed"] == 1)
    second, _ = acquire_relay(m.sock_path, handoff="relay")
    second.close()


def test_idle_relay_expires(start_manager: Callable[..., Manager], echo: Echo) -> None:
    m = start_manager(echo.target, 1, "--relay-idle-timeout", "0.3")
    sock, _ = acquire_relay(m.sock_path, handoff="relay")
    sock.settimeout(5)
    sock.sendall(b"a\n")
    assert sock.recv(4) == b"a\n"
    assert sock.recv(4) == b""  # ended by the manager after 0.3 s without traffic
    assert relay_stats(m)["expired"] == 1
    sock.close()


def test_shutdown_stops_live_relays(start_manager: Callable[..., Manager], echo: Echo) -> None:
    m = start_manager(echo.target, 1)
    sock, _ = acquire_relay(m.sock_path, handoff="relay")
    sock.settimeout(5)
    assert m.stop() == 0
    assert sock.recv(4) == b""
    sock.close()


def test_relay_meta_is_added_to_any_meta() -> None:
    assert json.loads(with_relay_meta(b'{"ok":true,"meta":{}}\n'))["meta"] == {"handoff": "relay"}
    assert json.loads(with_relay_meta(b'{"ok":true,"meta":{"a":{}}}\n'))["meta"] == {"a": {}, "handoff": "relay"}


def test_config_validates_handoff_and_budgets_relays() -> None:
    with pytest.raises(ConfigError, match="handoff must be one of inject, relay"):
        PoolConfig("p", target="h:1", handoff="splice").validate()
    cfg = ManagerConfig(socket="/tmp/x.sock", pools={"p": PoolConfig("p", target="h:1")}, max_relays=0)
    cfg.validate()
    without = cfg.fd_budget()
    cfg.max_relays = 10
    assert cfg.fd_budget() == without + 6 * 10 + 3
    cfg.max_relays = -1
    with pytest.raises(ConfigError, match="max_relays"):
        cfg.validate()


def test_no_relays_configured_refuses_relay(start_manager: Callable[..., Manager], echo: Echo, sockdir: Path) -> None:
    m = start_manager(echo.target, 1, "--max-relays", "0")
    reply = raw_exchange(m.sock_path, protocol.encode_request("acquire", pool="echo", handoff="relay"))
    assert error_of(reply) == "pool_exhausted"
