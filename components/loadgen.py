"""Python load generator for the pool protocol: N client processes acquiring in a loop.

Each client process connects to the manager, acquires one connection, checks it is a
connected TCP socket, optionally echoes a few bytes over it, closes it and repeats until
the duration is over. Prints one JSON object with counts, failures by error code and
latency percentiles. For functional tests; the C generator (components/c/loadgen.c)
is the one for throughput figures, since Python clients eat the CPU they measure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from components.protocol import PoolError, acquire


def _client(socket_path: str, pool: str, deadline: float, echo: bool, timeout: float) -> dict[str, Any]:
    lat: list[int] = []
    errors: dict[str, int] = {}
    while time.monotonic() < deadline:
        t0 = time.perf_counter_ns()
        try:
            sock, _reply = acquire(socket_path, pool, timeout)
        except PoolError as exc:
            errors[exc.code] = errors.get(exc.code, 0) + 1
            if exc.code == "manager_unavailable":
                time.sleep(0.01)  # nothing to talk to: do not spin
            continue
        dt = time.perf_counter_ns() - t0
        try:
            sock.getpeername()
            if echo:
                sock.settimeout(timeout)
                sock.sendall(b"ping\n")
                if sock.recv(16) != b"ping\n":
                    raise ConnectionError("bad echo")
            lat.append(dt)
        except OSError:
            errors["bad_connection"] = errors.get("bad_connection", 0) + 1
        finally:
            sock.close()
    return {"lat": lat, "errors": errors}


def _pct(values: list[int], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * (len(values) - 1)))] / 1000.0


def run(socket_path: str, clients: int, duration: float, pool: str, echo: bool, timeout: float) -> dict[str, Any]:
    start = time.monotonic()
    deadline = start + duration
    children: list[tuple[int, int]] = []
    for _ in range(clients):
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            code = 0
            try:
                out = json.dumps(_client(socket_path, pool, deadline, echo, timeout)).encode()
                with os.fdopen(wfd, "wb") as fh:
                    fh.write(out)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(wfd)
        children.append((pid, rfd))
    lat: list[int] = []
    errors: dict[str, int] = {}
    for pid, rfd in children:
        with os.fdopen(rfd, "rb") as fh:
            data = fh.read()
        os.waitpid(pid, 0)
        if not data:
            errors["client_crashed"] = errors.get("client_crashed", 0) + 1
            continue
        part = json.loads(data)
        lat.extend(part["lat"])
        for code, n in part["errors"].items():
            errors[code] = errors.get(code, 0) + n
    elapsed = time.monotonic() - start
    lat.sort()
    return {
        "clients": clients,
        "duration_s": round(elapsed, 3),
        "count": len(lat),
        "failures": sum(errors.values()),
        "errors": errors,
        "rate_per_s": round(len(lat) / elapsed, 1),
        "latency_us": {
            "p50": _pct(lat, 0.5),
            "p90": _pct(lat, 0.9),
            "p99": _pct(lat, 0.99),
            "max": _pct(lat, 1.0),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m components.loadgen", description=__doc__)
    p.add_argument("--socket", required=True, help="pool manager Unix socket")
    p.add_argument("--clients", type=int, default=4, help="client processes")
    p.add_argument("--duration", type=float, default=5.0, help="seconds")
    p.add_argument("--pool", default="echo")
    p.add_argument("--echo", action="store_true", help="echo a few bytes over every connection")
    p.add_argument("--timeout", type=float, default=2.0)
    args = p.parse_args(argv)
    if args.clients < 1 or args.duration <= 0:
        p.error("--clients >= 1 and --duration > 0 required")
    result = run(args.socket, args.clients, args.duration, args.pool, args.echo, args.timeout)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["count"] and not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
