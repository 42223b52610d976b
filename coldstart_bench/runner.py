"""One cold start = one fresh function container: create, start, wait, read its record, remove."""

from __future__ import annotations

import contextlib
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from .events import EventTimeout, LifecycleEvents
from .samples import Sample


@dataclass(frozen=True)
class FunctionSpec:
    """Everything needed to create one function container."""

    image: str
    command: list[str]
    network: str  # a docker network name, or "none"
    binds: dict[str, dict[str, str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ColdStartResult:
    container_id: str
    exit_code: int | None
    stdout: str
    stderr: str
    events: dict[str, int]
    record: dict[str, Any] | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.record is not None and bool(self.record.get("ok"))


def parse_function_record(stdout: str) -> dict[str, Any]:
    """The function prints exactly one JSON line; anything else is a broken cold start."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if len(lines) != 1:
        raise ValueError(f"expected exactly one JSON line from the function, got {len(lines)}: {stdout[:300]!r}")
    record = json.loads(lines[0])
    if not isinstance(record, dict):
        raise ValueError(f"function record is not a JSON object: {lines[0][:200]!r}")
    return record


class ColdStartRunner:
    def __init__(self, client: docker.DockerClient, events: LifecycleEvents, timeout: float = 60.0) -> None:
        self._api = client.api
        self._events = events
        self._timeout = timeout

    def _create(self, spec: FunctionSpec) -> str:
        host_config = self._api.create_host_config(binds=spec.binds or None, network_mode=spec.network)
        created = self._api.create_container(
            spec.image, command=spec.command, labels=spec.labels, host_config=host_config
        )
        return str(created["Id"])

    def _finish(self, cid: str) -> ColdStartResult:
        error = ""
        exit_code: int | None = None
        try:
            status = self._api.wait(cid, timeout=self._timeout)
            exit_code = int(status.get("StatusCode", -1))
        except Exception as exc:  # timeout or engine error: kill it, keep what we can
            error = f"function container did not exit within {self._timeout:.0f}s ({exc})"
            with contextlib.suppress(docker.errors.APIError):
                self._api.kill(cid)
        stdout = self._logs(cid, stdout=True)
        stderr = self._logs(cid, stdout=False)
        # Removed by someone else is fine: its events still tell the lifecycle.
        with contextlib.suppress(docker.errors.NotFound):
            self._api.remove_container(cid, force=True)
        events: dict[str, int] = {}
        try:
            events = self._events.wait(cid, timeout=30.0)
        except EventTimeout as exc:
            error = error or str(exc)
        finally:
            self._events.forget(cid)
        record: dict[str, Any] | None = None
        try:
            record = parse_function_record(stdout)
        except ValueError as exc:
            error = error or f"{exc}; exit code {exit_code}; stderr: {stderr.strip()[-300:]!r}"
        if not error and record is not None and not record.get("ok"):
            error = f"function reported failure: {record.get('error')}"
        if not error and exit_code not in (0, None):
            error = f"function exited with code {exit_code}"
        return ColdStartResult(cid, exit_code, stdout, stderr, events, record, error)

    def _logs(self, cid: str, stdout: bool) -> str:
        try:
            raw = self._api.logs(cid, stdout=stdout, stderr=not stdout)
        except docker.errors.APIError:
            return ""
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def run(self, spec: FunctionSpec) -> ColdStartResult:
        cid = self._create(spec)
        self._api.start(cid)
        return self._finish(cid)

    def run_burst(self, spec: FunctionSpec, n: int) -> list[ColdStartResult]:
        """N cold starts at once: all created first, then started together from N threads."""
        cids = [self._create(spec) for _ in range(n)]
        barrier = threading.Barrier(n)
        results: list[ColdStartResult | None] = [None] * n
        failures: list[BaseException] = []

        def one(i: int) -> None:
            try:
                barrier.wait(timeout=30)
                self._api.start(cids[i])
                results[i] = self._finish(cids[i])
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self._timeout + 60)
        if failures:
            raise failures[0]
        return [r for r in results if r is not None]


def _us(record: dict[str, Any], key: str) -> float:
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _ms_between(events: dict[str, int], a: str, b: str) -> float:
    if a in events and b in events:
        return (events[b] - events[a]) / 1e6
    return math.nan


def to_sample(
    result: ColdStartResult,
    *,
    scenario: str,
    iteration: int,
    delay_ms: float,
    network: str,
    block: int = 0,
    burst: int = 1,
) -> Sample:
    record = result.record or {}
    ev = result.events
    start_to_ready = math.nan
    if "start" in ev and isinstance(record.get("t_main_ns"), int):
        start_to_ready = (int(record["t_main_ns"]) - ev["start"]) / 1e6
    return Sample(
        scenario=scenario,
        iteration=iteration,
        mode=str(record.get("mode", "")),
        container_id=result.container_id,
        ok=result.ok,
        connect_us=_us(record, "connect_us"),
        lifecycle_ms=_ms_between(ev, "create", "destroy"),
        resolve_us=_us(record, "resolve_us"),
        handshake_us=_us(record, "handshake_us"),
        fd_recv_us=_us(record, "fd_recv_us"),
        request_rtt_us=_us(record, "request_rtt_us"),
        startup_us=_us(record, "startup_us"),
        auth_us=_us(record, "auth_us"),
        first_query_us=_us(record, "first_query_us"),
        import_us=_us(record, "import_us"),
        create_to_start_ms=_ms_between(ev, "create", "start"),
        start_to_ready_ms=start_to_ready,
        start_to_die_ms=_ms_between(ev, "start", "die"),
        die_to_destroy_ms=_ms_between(ev, "die", "destroy"),
        delay_ms=delay_ms,
        network=network,
        interfaces=";".join(str(i) for i in record.get("interfaces", []) or []),
        path=str(record.get("path", "")),
        block=block,
        burst=burst,
        t_create_ns=ev.get("create", 0),
        error=result.error,
    )
