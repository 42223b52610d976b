"""Legitimate acquire latency while another uid holds silent connections (run as root, by hand).

    python bench/uid_flood.py [--silent 1100] [--acquires 20]

Starts an echo server and a pool manager with default limits (max_clients 1024), forks a child
that becomes uid 65534 and keeps ``--silent`` connections open that never send a request (one the
manager closes is opened again at once), then times
root's acquires (each bounded by 10 s). Prints one JSON line: the latencies' median and max, and
how many acquires failed. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components import protocol
from tests.support.procs import Echo, Manager
from tests.unit.test_pool_manager_support import short_tmpdir


def flood(path: str, count: int, ready_w: int, stop_r: int) -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(path)
        return s

    socks = [connect() for _ in range(count)]
    os.write(ready_w, b"r")
    # Keep the flood up: a connection the manager closes (timeout, busy) is opened again at once.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        polled = select.poll()
        polled.register(stop_r, select.POLLIN)
        by_fd = {s.fileno(): s for s in socks}
        for fd in by_fd:
            polled.register(fd, select.POLLIN)
        events = polled.poll(100)
        if any(fd == stop_r for fd, _ in events):
            return
        for fd, _ in events:
            s = by_fd[fd]
            socks.remove(s)
            s.close()
            socks.append(connect())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--silent", type=int, default=1100)
    ap.add_argument("--acquires", type=int, default=20)
    args = ap.parse_args()
    assert os.getuid() == 0, "run as root: the flood runs as uid 65534"
    echo = Echo()
    with short_tmpdir() as d:
        d.chmod(0o755)
        m = Manager(d / "m.sock", echo.target, 8, "--socket-mode", "0666", "--allow-uid", "0",
                    "--allow-uid", "65534")  # fmt: skip
        ready_r, ready_w = os.pipe()
        stop_r, stop_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                flood(m.sock_path, args.silent, ready_w, stop_r)
            finally:
                os._exit(0)
        latencies, failed = [], 0
        try:
            select.select([ready_r], [], [], 30)
            time.sleep(0.5)
            for _ in range(args.acquires):
                t0 = time.perf_counter()
                try:
                    sock, _ = protocol.acquire(m.sock_path, timeout=10)
                    sock.close()
                    latencies.append((time.perf_counter() - t0) * 1000)
                except (protocol.PoolError, OSError):
                    failed += 1
        finally:
            os.close(stop_w)
            os.waitpid(pid, 0)
            m.stop()
            echo.stop()
    out = {"silent": args.silent, "acquires": args.acquires, "failed": failed}
    if latencies:
        out |= {"median_ms": round(statistics.median(latencies), 2), "max_ms": round(max(latencies), 2)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
