"""Where a cold function's injected connect goes: medians of each phase of connect_us.

Real cold starts: a throwaway network, echo server and pool manager (labelled, removed at the end)
and fresh function containers, one `docker run --rm` each, arms interleaved round-robin so drift
and the neighbours' load hit every arm alike. Arms:
  socket / socket-nonet          the function as shipped (prefetch on)
  socket-refill-later            the same against a second manager that tops its pool up 2 ms after a
                                 hand-out (--refill-defer-ms 2), to show what deferring the refill changes
  ...-noprefetch                 the same code without components/prefetch.py
  direct / direct-noprefetch     the direct path, to show it is not made slower
  socket-baseline                $COLDSTART_BASELINE_FUNCTION_IMAGE (an image of an older function,
                                 e.g. the one before this change), if set; it reports connect_us only
  warm-reference                 one acquire per round from this (warm) test process against the
                                 same manager: what the manager and the machine's load cost, with no
                                 cold-process work at all
Derived columns: acquire_other_us = connect_us - the five acquire phases (call overhead, closing
the Unix socket); main_to_end_us = t_end_ns - t_main_ns (the function's own run, prefetch included);
manager_us = the manager's own time for that acquire (accept -> reply sent, the bin of its stats
histogram the acquire landed in, read before and after each socket cold start).
Cold starts run like the harness's (measure.runner.ColdStartRunner, lifecycle from docker events), so
the run also prints its wall/lifecycle ratio: wall time of the measuring loop over the sum of the
measured cold starts' lifecycles. Prints tables of medians (µs) and stores the figures in
benchmark.extra_info.

Opt-in (it takes minutes):
  pytest bench/test_connect_breakdown.py -p no:xdist -s --bench-connect-breakdown [--bench-connect-breakdown-n 20]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.samples import ACQUIRE_PHASES

pytestmark = [pytest.mark.integration, pytest.mark.connect_breakdown]

SOCKET_MOUNT = "/run/cpm"
REFILL_LATER_SOCKET = "pool-later.sock"
PHASES = (
    "connect_us",
    *ACQUIRE_PHASES,
    "fd_check_us",
    "protocol_import_us",
    "prefetch_us",
    "resolve_us",
    "handshake_us",
    "request_rtt_us",
    "acquire_other_us",
    "main_to_end_us",
    "manager_us",
    "lifecycle_us",
)


@dataclass
class Arm:
    name: str
    mode: str
    network: str  # "bridge" (the throwaway network) or "none"
    image: str = ""
    extra: tuple[str, ...] = ()
    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class Bed:
    client: Any
    labels: dict[str, str]
    network: str
    echo_target: str
    socket_dir: Path
    images: Any
    runner: Any = None


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    """A throwaway network, echo server and two pool managers (one deferring its refill) sharing a
    socket directory, all labelled with one run and removed at the end."""
    from coldstart_bench.containers import BenchNetwork, EchoServer, PoolManager
    from coldstart_bench.containers.labels import LABEL_RUN, new_run_id, run_labels, sweep
    from coldstart_bench.measure.engine import EngineUnavailable, connect
    from coldstart_bench.measure.events import LifecycleEvents
    from coldstart_bench.measure.images import ensure_images
    from coldstart_bench.measure.runner import ColdStartRunner

    try:
        client = connect()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {str(exc).splitlines()[0]}")
    images = ensure_images(client, ["function", "pool", "echo"])
    run_id = new_run_id()
    labels = run_labels(run_id)
    socket_dir = Path(tempfile.mkdtemp(prefix=f"csb-cb-{run_id}-", dir="/tmp"))
    socket_dir.chmod(0o755)
    try:
        with (
            BenchNetwork(client, labels=labels) as net,
            EchoServer(images.echo, network=net.name, labels=labels) as echo,
            PoolManager(images.pool, network=net.name, pools={"echo": {"target": echo.target, "size": 32}},
                        socket_dir=socket_dir, labels=labels),
            PoolManager(images.pool, network=net.name, pools={"echo": {"target": echo.target, "size": 32}},
                        socket_dir=socket_dir, socket_name=REFILL_LATER_SOCKET, labels=labels,
                        extra_args=("--refill-defer-ms", "2")),
            LifecycleEvents(client, f"{LABEL_RUN}={run_id}") as events,
        ):  # fmt: skip
            yield Bed(client, labels, net.name, echo.target, socket_dir, images, ColdStartRunner(client, events))
    finally:
        sweep(client, run_id)
        shutil.rmtree(socket_dir, ignore_errors=True)


def _manager_latency_counts(bed: Bed, arm: Arm) -> list[int]:
    from components import protocol

    name = REFILL_LATER_SOCKET if f"{SOCKET_MOUNT}/{REFILL_LATER_SOCKET}" in arm.extra else "pool.sock"
    stats = protocol.request(str(bed.socket_dir / name), "stats")
    return list(stats["acquire_latency_us"]["counts"])


def _cold_start(bed: Bed, arm: Arm) -> dict[str, Any]:
    from coldstart_bench.measure.runner import FunctionSpec

    command = [
        "python3", "-m", "components.function", "--mode", arm.mode, "--target", bed.echo_target,
        "--socket", f"{SOCKET_MOUNT}/pool.sock", "--pool", "echo", "--payload-size", "64", *arm.extra,
    ]  # fmt: skip
    spec = FunctionSpec(
        image=arm.image or bed.images.function,
        command=command,
        network="none" if arm.network == "none" else bed.network,
        binds={str(bed.socket_dir): {"bind": SOCKET_MOUNT, "mode": "rw"}},
        labels={**bed.labels, "coldstart-bench.role": "function"},
    )
    before = _manager_latency_counts(bed, arm) if arm.mode == "socket" else None
    result = bed.runner.run(spec)
    if result.record is None:
        raise ValueError(result.error or f"no record: {result.stdout[:300]!r}")
    record: dict[str, Any] = dict(result.record)
    if "create" in result.events and "destroy" in result.events:
        record["lifecycle_us"] = (result.events["destroy"] - result.events["create"]) / 1000
    if before is not None:
        after = _manager_latency_counts(bed, arm)
        from components.cpm.model import LAT_BOUNDS_US

        grew = [i for i, (a, b) in enumerate(zip(before, after, strict=False)) if b > a]
        if len(grew) == 1 and grew[0] < len(LAT_BOUNDS_US):
            record["manager_us"] = float(LAT_BOUNDS_US[grew[0]])  # upper bound of the histogram bin
    return record


def _derive(record: dict[str, Any]) -> None:
    phases = [record.get(k) for k in ACQUIRE_PHASES]
    if isinstance(record.get("connect_us"), (int, float)) and all(isinstance(p, (int, float)) for p in phases):
        record["acquire_other_us"] = record["connect_us"] - sum(phases)  # type: ignore[arg-type]
    if isinstance(record.get("t_end_ns"), int) and isinstance(record.get("t_main_ns"), int):
        record["main_to_end_us"] = (record["t_end_ns"] - record["t_main_ns"]) / 1000


def _warm_acquire(bed: Bed) -> dict[str, Any]:
    from components import protocol

    phases: dict[str, float] = {}
    t0 = time.perf_counter_ns()
    sock, _reply = protocol.acquire(str(bed.socket_dir / "pool.sock"), "echo", 2.0, phases=phases)
    record: dict[str, Any] = {"connect_us": (time.perf_counter_ns() - t0) / 1000, **phases}
    sock.close()
    _derive(record)
    return record


def _median(records: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def _by_manager_bin(records: list[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Client reply_recv_us grouped by the manager's own time for the same acquire."""
    groups: dict[float, list[dict[str, Any]]] = {}
    for r in records:
        if isinstance(r.get("manager_us"), float):
            groups.setdefault(r["manager_us"], []).append(r)
    return {
        f"<={int(k)}": {"n": len(v), "reply_recv_us": _median(v, "reply_recv_us")} for k, v in sorted(groups.items())
    }


def test_connect_breakdown(bed: Bed, benchmark: Any, request: pytest.FixtureRequest) -> None:
    n = int(request.config.getoption("bench_connect_breakdown_n"))
    arms = [
        Arm("socket", "socket", "bridge"),
        Arm("socket-noprefetch", "socket", "bridge", extra=("--no-prefetch",)),
        Arm("socket-refill-later", "socket", "bridge", extra=("--socket", f"{SOCKET_MOUNT}/{REFILL_LATER_SOCKET}")),
        Arm("socket-nonet", "socket", "none"),
        Arm("socket-nonet-noprefetch", "socket", "none", extra=("--no-prefetch",)),
        Arm("direct", "direct", "bridge"),
        Arm("direct-noprefetch", "direct", "bridge", extra=("--no-prefetch",)),
    ]
    baseline = os.environ.get("COLDSTART_BASELINE_FUNCTION_IMAGE")
    if baseline:
        arms.append(Arm("socket-baseline", "socket", "bridge", image=baseline))
        arms.append(Arm("direct-baseline", "direct", "bridge", image=baseline))

    warm = Arm("warm-reference", "socket", "host")

    def run_all() -> None:
        _warm_acquire(bed)  # this process's own first acquire is not warm
        for arm in arms:  # one discarded start per arm: the first of a kind pays image/network set-up
            with contextlib.suppress(Exception):
                _cold_start(bed, arm)
        deadline = time.monotonic() + 60 + n * len(arms) * 5.0
        t_loop = time.perf_counter()
        for _ in range(n):
            warm.records.append(_warm_acquire(bed))
            for arm in arms:
                if time.monotonic() > deadline:
                    return
                try:
                    record = _cold_start(bed, arm)
                except Exception as exc:
                    arm.failures.append(f"{type(exc).__name__}: {exc}"[:300])
                    continue
                if record.get("ok") and record.get("path") == arm.mode:
                    _derive(record)
                    arm.records.append(record)
                else:
                    arm.failures.append(str(record.get("error") or record.get("fallback_reason")))
        wall["loop_s"] = time.perf_counter() - t_loop

    wall: dict[str, float] = {}
    load_before = os.getloadavg()
    benchmark.pedantic(run_all, rounds=1, iterations=1)
    load_after = os.getloadavg()
    arms.append(warm)
    table: dict[str, dict[str, float | None]] = {
        arm.name: {"n": len(arm.records), **{k: _median(arm.records, k) for k in PHASES}} for arm in arms
    }
    lifecycle_s = sum(float(r["lifecycle_us"]) for a in arms for r in a.records if "lifecycle_us" in r) / 1e6
    ratio = wall["loop_s"] / lifecycle_s if lifecycle_s else None
    manager_split = {a.name: _by_manager_bin(a.records) for a in arms if a.mode == "socket" and a.records}
    benchmark.extra_info["connect_breakdown_median_us"] = table
    benchmark.extra_info["reply_recv_by_manager_time"] = manager_split
    benchmark.extra_info["wall_lifecycle"] = {"loop_s": wall["loop_s"], "lifecycle_s": lifecycle_s, "ratio": ratio}
    benchmark.extra_info["loadavg"] = {"before": load_before, "after": load_after}
    benchmark.extra_info["failures"] = {arm.name: arm.failures[:5] for arm in arms if arm.failures}
    cols = [k for k in PHASES if any(table[a.name][k] is not None for a in arms)]
    print(f"\nload average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1 min)")
    print(f"connect breakdown, medians in µs, {n} cold starts per arm (interleaved)")
    print(f"{'arm':<24} {'n':>3} " + " ".join(f"{c.removesuffix('_us'):>14}" for c in cols))
    for arm in arms:
        row = table[arm.name]
        cells = " ".join(f"{row[c]:>14.0f}" if row[c] is not None else f"{'-':>14}" for c in cols)
        print(f"{arm.name:<24} {len(arm.records):>3} {cells}")
    print("client reply_recv_us (median) by the manager's own time for the same acquire (accept -> reply):")
    for name, split in manager_split.items():
        print(f"  {name:<24} " + "; ".join(f"manager {k} µs: n {v['n']}, reply_recv {v['reply_recv_us']:.0f}"
                                           for k, v in split.items() if v["reply_recv_us"] is not None))  # fmt: skip
    if ratio is not None:
        print(f"wall/lifecycle of this run: {ratio:.2f}x ({wall['loop_s']:.1f} s loop, {lifecycle_s:.1f} s lifecycles)")
    for arm in arms:
        assert len(arm.records) >= max(1, n // 2), f"{arm.name}: too few good cold starts: {arm.failures[:3]}"
