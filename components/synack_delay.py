"""Delay the outgoing SYN-ACKs of one local TCP port by N ms (or, ``--scope all``, every packet it sends).

Runs inside the network namespace of the server it slows down (a sidecar
container sharing it, with CAP_NET_ADMIN). Two backends:

- ``netem``: a prio qdisc whose extra band holds a netem delay, and a u32
  filter sending TCP segments from the port with SYN+ACK set to that band.
- ``nfqueue``: an iptables rule queueing those segments to NFQUEUE, and this
  process holding each one N ms before accepting it (fnfqueue). For kernels
  without sch_netem.

``--scope all`` delays every TCP segment from the port, not only SYN-ACKs: each round trip
between a client and the server then takes N ms longer (a database at a network distance),
handshakes and data alike. ``auto`` uses netem where the kernel has it, nfqueue otherwise. Prints one JSON
line ``{"event": "ready", ...}`` once the delay is in effect; on SIGTERM/SIGINT
removes its qdisc or rule (normal handshakes restored) and exits.

    python -m components.synack_delay --delay-ms 50 --port 7000 [--backend auto|netem|nfqueue] [--scope synack|all]
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

BACKENDS = ("netem", "nfqueue")
SCOPES = ("synack", "all")  # which segments from the port are delayed
# Offsets assume a 20-byte IPv4 header (no options): Linux never puts options on a SYN-ACK.
_TCP_SPORT_AT = 20
_TCP_FLAGS_AT = 33
_SYN_ACK = 0x12
NETEM_BAND = 4  # prio's default priomap only uses bands 1-3, so band 4 gets only what the filter sends


class DelayError(RuntimeError):
    """A backend could not be set up."""


# --- command lines (pure) ----------------------------------------------------------------


def netem_setup_commands(dev: str, port: int, delay_ms: float, scope: str = "synack") -> list[list[str]]:
    flags = ["match", "u8", hex(_SYN_ACK), hex(_SYN_ACK), "at", str(_TCP_FLAGS_AT)] if scope == "synack" else []
    return [
        ["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "prio", "bands", str(NETEM_BAND)],
        ["tc", "qdisc", "add", "dev", dev, "parent", f"1:{NETEM_BAND}", "handle", "40:",
         "netem", "delay", f"{delay_ms:g}ms"],
        ["tc", "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
         "match", "ip", "protocol", "6", "0xff",
         "match", "u8", "0x05", "0x0f", "at", "0",
         "match", "u16", str(port), "0xffff", "at", str(_TCP_SPORT_AT),
         *flags,
         "flowid", f"1:{NETEM_BAND}"],
    ]  # fmt: skip


def netem_teardown_commands(dev: str) -> list[list[str]]:
    return [["tc", "qdisc", "del", "dev", dev, "root"]]


def nfqueue_rule(port: int, queue_num: int, scope: str = "synack") -> list[str]:
    # --queue-bypass: with no listener on the queue the kernel accepts instead of
    # dropping, so a dead daemon never blackholes the server's handshakes.
    flags = ["--tcp-flags", "SYN,ACK", "SYN,ACK"] if scope == "synack" else []
    return [
        "OUTPUT", "-p", "tcp", "--sport", str(port), *flags,
        "-j", "NFQUEUE", "--queue-num", str(queue_num), "--queue-bypass",
    ]  # fmt: skip


def nfqueue_setup_commands(
    port: int, queue_num: int, iptables: str = "iptables", scope: str = "synack"
) -> list[list[str]]:
    return [[iptables, "-w", "5", "-A", *nfqueue_rule(port, queue_num, scope)]]


def nfqueue_teardown_commands(
    port: int, queue_num: int, iptables: str = "iptables", scope: str = "synack"
) -> list[list[str]]:
    return [[iptables, "-w", "5", "-D", *nfqueue_rule(port, queue_num, scope)]]


def default_interface() -> str:
    """The interface of the default route (eth0 in a container), else the first non-loopback."""
    try:
        with open("/proc/net/route") as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if len(fields) > 1 and fields[1] == "00000000":
                    return fields[0]
        names = sorted(n for n in os.listdir("/sys/class/net") if n != "lo")
        if names:
            return names[0]
    except OSError:
        pass
    return "eth0"


# --- holding logic -----------------------------------------------------------------------


@dataclass(order=True)
class _Held(Generic[T]):
    release_at: float
    seq: int
    item: T = field(compare=False)


class HoldScheduler(Generic[T]):
    """Items each released ``delay_s`` after their arrival, independently of each other.

    A heap ordered by release time: any number of items can be in flight, and
    each gets exactly its own delay (nothing is serialised behind another).
    """

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._heap: list[_Held[T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def submit(self, item: T, arrived_at: float) -> float:
        release_at = arrived_at + self.delay_s
        heapq.heappush(self._heap, _Held(release_at, next(self._seq), item))
        return release_at

    def next_release(self) -> float | None:
        return self._heap[0].release_at if self._heap else None

    def pop_due(self, now: float) -> list[T]:
        due = []
        while self._heap and self._heap[0].release_at <= now:
            due.append(heapq.heappop(self._heap).item)
        return due

    def pop_all(self) -> list[T]:
        items = [held.item for held in sorted(self._heap)]
        self._heap.clear()
        return items


class Releaser(Generic[T]):
    """Thread that calls ``release(item)`` when each submitted item is due."""

    def __init__(
        self,
        delay_s: float,
        release: Callable[[T], None],
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._scheduler: HoldScheduler[T] = HoldScheduler(delay_s)
        self._release = release
        self._clock = clock
        self._on_error = on_error
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="synack-releaser", daemon=True)

    def start(self) -> Releaser[T]:
        self._thread.start()
        return self

    def submit(self, item: T, arrived_at: float | None = None) -> None:
        with self._cond:
            if not self._closed:
                self._scheduler.submit(item, self._clock() if arrived_at is None else arrived_at)
                self._cond.notify()
                return
        self._call(item)  # closing: a straggler goes at once rather than never

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    nxt = self._scheduler.next_release()
                    now = self._clock()
                    if nxt is not None and nxt <= now:
                        break
                    self._cond.wait(None if nxt is None else nxt - now)
                if self._closed:
                    return
                due = self._scheduler.pop_due(self._clock())
            for item in due:  # outside the lock: submit() never waits on a verdict
                self._call(item)

    def _call(self, item: T) -> None:
        try:
            self._release(item)
        except Exception as exc:
            if self._on_error is not None:
                self._on_error(exc)

    def close(self, flush: bool = True) -> None:
        """Stop the thread; with flush, release everything still held right away."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            remaining = self._scheduler.pop_all()
        self._thread.join(timeout=5)
        if flush:
            for item in remaining:
                self._call(item)


# --- backends ------------------------------------------------------------------------------


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


def _run_all(commands: Sequence[Sequence[str]]) -> str | None:
    """Run commands in order; the first failure's message, or None."""
    for argv in commands:
        try:
            proc = _run(argv)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(argv)}: {exc}"
        if proc.returncode != 0:
            return f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()}"
    return None


class Backend:
    name = ""
    error: BaseException | None = None  # set by a backend that fails while running

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {}


class NetemBackend(Backend):
    name = "netem"

    def __init__(self, dev: str, port: int, delay_ms: float, scope: str = "synack") -> None:
        self.dev, self.port, self.delay_ms, self.scope = dev, port, delay_ms, scope

    def start(self) -> None:
        error = _run_all(netem_setup_commands(self.dev, self.port, self.delay_ms, self.scope))
        if error:
            _run_all(netem_teardown_commands(self.dev))  # leave no half-built qdisc
            raise DelayError(f"netem: {error}")

    def stop(self) -> None:
        _run_all(netem_teardown_commands(self.dev))

    def describe(self) -> dict[str, Any]:
        return {"dev": self.dev}


class NfqueueBackend(Backend):
    name = "nfqueue"

    def __init__(self, port: int, delay_ms: float, queue_num: int = 0, scope: str = "synack") -> None:
        self.port, self.delay_ms, self.queue_num, self.scope = port, delay_ms, queue_num, scope
        self.iptables = "iptables"
        self._conn: Any = None
        self._releaser: Releaser[Any] | None = None
        self._reader: threading.Thread | None = None
        self._rule_added = False

    def start(self) -> None:
        try:
            import fnfqueue  # lazily: only this backend needs it (and cffi)
        except ImportError as exc:
            raise DelayError(f"nfqueue: python package fnfqueue is not importable ({exc})") from exc
        try:
            self._conn = fnfqueue.Connection()
            queue = self._conn.bind(self.queue_num)
            # Only the verdict matters: copy as little of each packet as possible.
            queue.set_mode(128, fnfqueue.COPY_PACKET)
            queue.fail_open = True  # queue overflow accepts instead of dropping
        except Exception as exc:
            self._close_conn()
            raise DelayError(f"nfqueue: cannot bind queue {self.queue_num}: {exc}") from exc
        self._releaser = Releaser(self.delay_ms / 1000.0, self._accept, on_error=self._fail).start()
        self._reader = threading.Thread(target=self._read, name="synack-reader", daemon=True)
        self._reader.start()
        errors = []
        for iptables in ("iptables", "iptables-legacy"):
            error = _run_all(nfqueue_setup_commands(self.port, self.queue_num, iptables, self.scope))
            if error is None:
                self.iptables, self._rule_added = iptables, True
                return
            errors.append(error)
        self.stop()
        raise DelayError("nfqueue: " + " | ".join(errors))

    @staticmethod
    def _accept(packet: Any) -> None:
        packet.accept()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc

    def _read(self) -> None:
        import fnfqueue

        releaser, conn = self._releaser, self._conn
        assert releaser is not None and conn is not None
        while self._conn is not None:
            try:
                for packet in conn:
                    releaser.submit(packet)
                return  # connection closed
            except fnfqueue.BufferOverflowException:
                conn.reset()  # the kernel accepted what did not fit (fail_open)
            except Exception as exc:
                self._fail(exc)
                return

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def stop(self) -> None:
        # Rule first, so no new packet is queued; then let everything held go.
        if self._rule_added:
            _run_all(nfqueue_teardown_commands(self.port, self.queue_num, self.iptables, self.scope))
            self._rule_added = False
        if self._releaser is not None:
            self._releaser.close(flush=True)
            self._releaser = None
        self._close_conn()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None

    def describe(self) -> dict[str, Any]:
        return {"queue_num": self.queue_num, "iptables": self.iptables}


def start_backend(
    choice: str, dev: str, port: int, delay_ms: float, queue_num: int, scope: str = "synack"
) -> tuple[Backend, list[str]]:
    """Start the chosen backend (auto: netem, falling back to nfqueue); (backend, errors seen)."""
    order = BACKENDS if choice == "auto" else (choice,)
    errors: list[str] = []
    for name in order:
        backend: Backend = (
            NetemBackend(dev, port, delay_ms, scope)
            if name == "netem"
            else NfqueueBackend(port, delay_ms, queue_num, scope)
        )
        try:
            backend.start()
        except DelayError as exc:
            errors.append(str(exc))
            continue
        return backend, errors
    raise DelayError("no SYN-ACK delay backend works here: " + "; ".join(errors))


def probe() -> dict[str, Any]:
    """Which backends work in this namespace, without touching real traffic (uses lo / a dummy rule)."""
    results: dict[str, Any] = {}
    netem = netem_setup_commands("lo", 9, 1)[:2]
    err = _run_all(netem)
    _run_all(netem_teardown_commands("lo"))
    results["netem"] = err or "ok"
    nfq = NfqueueBackend(9, 1, queue_num=4093)
    try:
        nfq.start()
        results["nfqueue"] = "ok"
    except DelayError as exc:
        results["nfqueue"] = str(exc)
    finally:
        nfq.stop()
    usable = [name for name in BACKENDS if results[name] == "ok"]
    return {"event": "probe", "backend": usable[0] if usable else None, "results": results}


def cleanup(dev: str, port: int, queue_num: int) -> list[str]:
    """Remove whatever a killed instance may have left; returns what was removed."""
    removed = []
    if _run_all(netem_teardown_commands(dev)) is None:
        removed.append(f"qdisc root on {dev}")
    for iptables in ("iptables", "iptables-legacy"):
        for scope in SCOPES:
            # Bounded: the same rule could have been added more than once.
            for _ in range(8):
                if _run_all(nfqueue_teardown_commands(port, queue_num, iptables, scope)) is not None:
                    break
                what = "" if scope == "synack" else " (every segment)"
                removed.append(f"{iptables} NFQUEUE rule{what} for port {port}")
    return removed


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def main(argv: Sequence[str] | None = None, stop: threading.Event | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.synack_delay", description=__doc__.split("\n")[0])
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--port", type=int, default=7000)
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto")
    parser.add_argument("--queue-num", type=int, default=0)
    parser.add_argument(
        "--scope", choices=SCOPES, default="synack", help="delay SYN-ACKs only, or every segment the port sends"
    )
    parser.add_argument("--dev", default=None, help="interface for netem (default: that of the default route)")
    parser.add_argument("--probe", action="store_true", help="report which backends work, then exit")
    parser.add_argument(
        "--cleanup", action="store_true", help="remove a qdisc/rule left by an instance that was killed, then exit"
    )
    args = parser.parse_args(argv)

    if args.probe:
        _emit(probe())
        return 0
    if args.cleanup:
        _emit({"event": "cleaned", "removed": cleanup(args.dev or default_interface(), args.port, args.queue_num)})
        return 0
    if args.delay_ms <= 0 or not 0 < args.port < 65536:
        parser.error("--delay-ms must be > 0 and --port in 1..65535")

    stop_event = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_event.set())

    dev = args.dev or default_interface()
    try:
        backend, errors = start_backend(args.backend, dev, args.port, args.delay_ms, args.queue_num, args.scope)
    except DelayError as exc:
        print(f"synack_delay: {exc}", file=sys.stderr, flush=True)
        _emit({"event": "error", "error": str(exc)})
        return 2
    ready = {
        "event": "ready",
        "backend": backend.name,
        "delay_ms": args.delay_ms,
        "port": args.port,
        "scope": args.scope,
    }
    _emit({**ready, **backend.describe(), "fallback_reasons": errors})
    status = 0
    try:
        while not stop_event.wait(0.5):
            if backend.error is not None:
                print(f"synack_delay: {backend.name} failed: {backend.error}", file=sys.stderr, flush=True)
                status = 1
                break
    finally:
        backend.stop()
    _emit({"event": "stopped", "backend": backend.name})
    return status


if __name__ == "__main__":
    sys.exit(main())
