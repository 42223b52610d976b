"""Load benchmarks of the Connection Pool Manager (issue "CPM as a dependable service").

Real echo server and manager subprocesses on loopback, driven by the C load generator
(components/c/loadgen.c, built here with the system compiler). Targets on a 2-core box:
  - >= 8,000 acquisitions/s for 10 s from 8 client processes, p99 <= 2 ms, no failures;
  - a pool of 1000 connections: manager RSS <= 40 MB, refilled from empty in <= 1 s;
  - open fds after 100,000 hand-outs equal the count before (within the pool size).
Figures go to ``benchmark.extra_info``. Run: pytest bench/test_pool_load.py -p no:xdist -m pool_load
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.measure.host_processes import REPO, Echo, Manager, cpu_seconds

CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")

pytestmark = [
    pytest.mark.pool_load,
    pytest.mark.skipif(CC is None, reason="the load benchmark needs a C compiler (cc) for its load generator"),
]

RATE_TARGET = 8000.0
P99_TARGET_US = 2000.0
CLIENTS = 8
DURATION_S = 10.0


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="cpm-bench-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def loadgen(workdir: Path) -> Path:
    assert CC is not None
    exe = workdir / "loadgen"
    subprocess.run(
        [CC, "-O2", "-Wall", "-o", str(exe), str(REPO / "components" / "c" / "loadgen.c")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return exe


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.stop()


def _manager(workdir: Path, echo: Echo, size: int, *extra: str) -> Manager:
    # A pool of 1000 takes a while to fill on a loaded machine: wait longer than the tests do.
    return Manager(workdir / f"cpm-{size}.sock", echo.target, size, *extra, ready_timeout=60)


def _run_loadgen(exe: Path, sock: str, procs: int, duration: float, count: int = 0) -> dict[str, Any]:
    args = [str(exe), "--socket", sock, "--procs", str(procs), "--duration", str(duration)]
    if count:
        args += ["--count", str(count)]
    out = subprocess.run(args, capture_output=True, timeout=duration + 60, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_acquisition_throughput(benchmark: Any, workdir: Path, loadgen: Path, echo: Echo) -> None:
    m = _manager(workdir, echo, 256)
    load_before = os.getloadavg()[0]
    try:
        result: dict[str, Any] = {}
        cpu0 = (m.cpu_seconds(), cpu_seconds(echo.proc.pid))

        def run() -> None:
            result.update(_run_loadgen(loadgen, m.sock_path, CLIENTS, DURATION_S))

        benchmark.pedantic(run, rounds=1, iterations=1)
        cpu1 = (m.cpu_seconds(), cpu_seconds(echo.proc.pid))
        stats = m.stats()
    finally:
        m.stop()
    benchmark.extra_info.update(
        {
            "clients": CLIENTS,
            "duration_s": result["duration_s"],
            "acquisitions": result["count"],
            "failures": result["failures"],
            "rate_per_s": result["rate_per_s"],
            "latency_us": result["latency_us"],
            "manager_latency_us": stats["acquire_latency_us"],
            "borrow_waits": stats["pools"]["echo"]["borrow_waits"],
            "cpus": os.cpu_count(),
            # Everything shares the same cores: other load on the machine moves these figures.
            "loadavg_1m_before": round(load_before, 2),
            # CPU time per acquisition: where the 2 cores go.
            "manager_cpu_us_per_acquire": round((cpu1[0] - cpu0[0]) * 1e6 / max(result["count"], 1), 1),
            "echo_cpu_us_per_acquire": round((cpu1[1] - cpu0[1]) * 1e6 / max(result["count"], 1), 1),
        }
    )
    assert result["failures"] == 0, result
    assert result["rate_per_s"] >= RATE_TARGET, result
    assert result["latency_us"]["p99"] <= P99_TARGET_US, result


def test_pool_of_1000_rss_and_refill(benchmark: Any, workdir: Path, echo: Echo) -> None:
    m = _manager(workdir, echo, 1000, "--max-connecting", "128")
    try:
        events = m.log_events()
        # The pool starts empty when the socket is bound and is full at "ready": refill from empty.
        t_listen = next(e["ts"] for e in events if e["event"] == "listening")
        t_ready = next(e["ts"] for e in events if e["event"] == "ready")
        refill_s = t_ready - t_listen
        rss = m.rss_mb()
        from components.protocol import acquire

        def handouts() -> None:
            # Serve 1000 hand-outs (the pool refills behind them) and check memory stays flat.
            for _ in range(1000):
                acquire(m.sock_path)[0].close()

        benchmark.pedantic(handouts, rounds=1, iterations=1)
        deadline = time.monotonic() + 10
        while m.stats()["pools"]["echo"]["idle"] < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        rss_after = m.rss_mb()
    finally:
        m.stop()
    benchmark.extra_info.update(
        {"refill_from_empty_s": round(refill_s, 3), "rss_mb": round(rss, 1), "rss_after_mb": round(rss_after, 1)}
    )
    assert refill_s <= 1.0
    assert rss <= 40 and rss_after <= 40


def test_fd_count_stable_over_100k_handouts(benchmark: Any, workdir: Path, loadgen: Path, echo: Echo) -> None:
    size = 64
    m = _manager(workdir, echo, size)
    try:
        before = m.open_fds()
        result: dict[str, Any] = {}

        def run() -> None:
            result.update(_run_loadgen(loadgen, m.sock_path, 4, 120, count=100_000))

        benchmark.pedantic(run, rounds=1, iterations=1)
        deadline = time.monotonic() + 10
        while m.stats()["pools"]["echo"]["idle"] < size and time.monotonic() < deadline:
            time.sleep(0.01)
        after = m.open_fds()
        handed = m.stats()["pools"]["echo"]["handed_out"]
    finally:
        m.stop()
    benchmark.extra_info.update({"fds_before": before, "fds_after": after, "handouts": handed})
    assert result["failures"] == 0 and result["count"] >= 100_000
    assert handed == result["count"]
    assert abs(after - before) <= size
