"""Relay engine throughput and CPU cost (components/relay.py), splice against user-space copy.

RELAYS relays in one RelayHub thread, each moving BYTES_PER_DIRECTION both ways at once between
an AF_UNIX socketpair end and a loopback TCP connection. The traffic ends run in a forked child
process so the hub's thread CPU time (time.thread_time) is the relay's cost alone. Figures go to
``benchmark.extra_info`` and stdout. Opt-in like the pool manager load benchmarks:

    pytest bench/test_relay_load.py -p no:xdist -m pool_load -s
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import pytest

from components.relay import CLOSED, RelayHub, RelayResult, splice_available

pytestmark = pytest.mark.pool_load

RELAYS = 8
BYTES_PER_DIRECTION = 64 * 1024 * 1024
CHUNK = 1 << 20
TIMEOUT_S = 120.0


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        near = socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    return near, far


def _pump(sock: socket.socket, total: int) -> None:
    """Send ``total`` zero bytes, half-close, then read to EOF (counting what comes back)."""
    chunk = memoryview(bytes(CHUNK))
    received = [0]

    def reader() -> None:
        buf = bytearray(CHUNK)
        while n := sock.recv_into(buf):
            received[0] += n

    t = threading.Thread(target=reader)
    t.start()
    left = total
    while left:
        left -= sock.send(chunk[: min(left, CHUNK)])
    sock.shutdown(socket.SHUT_WR)
    t.join(TIMEOUT_S)
    if received[0] != total:
        raise SystemExit(f"received {received[0]} of {total} bytes")


def _drive_in_child(ends: list[socket.socket]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        threads = [threading.Thread(target=_pump, args=(s, BYTES_PER_DIRECTION)) for s in ends]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT_S)
    except BaseException:
        code = 1
    os._exit(code)


@pytest.mark.parametrize("zero_copy", [pytest.param(True, id="splice"), pytest.param(False, id="copy")])
def test_relay_throughput_and_cpu_per_mb(benchmark: Any, zero_copy: bool) -> None:
    if zero_copy and not splice_available():
        pytest.skip("os.splice is not available on this platform")
    hub = RelayHub(zero_copy=zero_copy)
    results: list[RelayResult] = []
    hub_ends: list[tuple[socket.socket, socket.socket]] = []
    traffic_ends: list[socket.socket] = []
    for _ in range(RELAYS):
        client, hub_unix = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        hub_tcp, peer = _tcp_pair()
        hub_ends.append((hub_unix, hub_tcp))
        traffic_ends += [client, peer]
    figures: dict[str, Any] = {}

    def run() -> None:
        hub.start()
        started = time.perf_counter()
        pid = _drive_in_child(traffic_ends)
        for s in traffic_ends:
            s.close()
        for a, b in hub_ends:
            hub.add(a, b, on_close=results.append)
        _, status = os.waitpid(pid, 0)
        deadline = time.monotonic() + TIMEOUT_S
        while len(results) < RELAYS and time.monotonic() < deadline:
            time.sleep(0.01)
        wall = time.perf_counter() - started
        figures.update(wall_s=wall, child_status=status)

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
        stats = hub.stats
    finally:
        hub.close()
    total_mb = stats.bytes_total / 1e6
    extra = {
        "zero_copy": zero_copy,
        "relays": RELAYS,
        "mb_relayed": round(total_mb, 1),
        "wall_s": round(figures["wall_s"], 3),
        "throughput_mb_s": round(total_mb / figures["wall_s"], 1),
        "hub_cpu_s": round(stats.cpu_s, 3),
        "hub_cpu_ms_per_mb": round(stats.cpu_ms_per_mb or 0.0, 3),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    benchmark.extra_info.update(extra)
    print(f"\nrelay {'splice' if zero_copy else 'copy'}: {extra}")
    assert figures["child_status"] == 0
    assert [r.outcome for r in results] == [CLOSED] * RELAYS
    assert stats.bytes_total == 2 * RELAYS * BYTES_PER_DIRECTION
