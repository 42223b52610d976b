"""Helpers shared by the pool tests: real echo server and manager subprocesses on loopback.

(Named test_* only so it sits with the tests it serves; it defines no tests itself.)
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

# The process helpers live in the package, where the load benchmarks use them too.
from coldstart_bench.measure.host_processes import (  # noqa: F401
    REPO,
    Echo,
    Manager,
    env,
    read_json_line,
    short_tmpdir,
    stop,
)


def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll until predicate() is truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


def raw_exchange(sock_path: str, payload: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes to the manager and return everything it answers until it closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        if payload:
            s.sendall(payload)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def dead_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def echo_roundtrip(sock: socket.socket, data: bytes = b"roundtrip\n") -> bool:
    sock.settimeout(3)
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(len(data) - len(got))
        if not chunk:
            return False
        got += chunk
    return got == data


def error_of(reply: bytes) -> str:
    obj = json.loads(reply.split(b"\n", 1)[0])
    assert obj["ok"] is False, obj
    assert set(obj) == {"ok", "error", "detail"}
    return str(obj["error"])


def loose_fds(m: Manager) -> int:
    """The manager's open descriptors that are not pooled connections (listener, epoll, clients...)."""
    st = m.stats()
    pooled = sum(p["idle"] + p.get("settling", 0) + p["connecting"] for p in st["pools"].values())
    return int(st["open_fds"]) - pooled


def assert_still_serving(m: Manager, loose_before: int, pool: str = "echo") -> None:
    """After an abuse test: the manager still runs, serves an acquire, and holds no extra descriptor."""
    from components import protocol

    assert m.proc.poll() is None, m.logs()[-2000:]
    sock, _ = protocol.acquire(m.sock_path, pool)
    assert echo_roundtrip(sock)
    sock.close()
    wait_for(lambda: loose_fds(m) == loose_before, timeout=5)
