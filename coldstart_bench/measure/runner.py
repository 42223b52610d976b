"""One cold start = one fresh function container: create, start, wait, read its record, remove."""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from docker.utils.socket import STDOUT, frames_iter

from ..phases import PHASES, STAMPS, derived
from ..samples import ACQUIRE_RECORD_FIELDS, Sample
from .events import EventTimeout, LifecycleEvents


@dataclass(frozen=True)
class FunctionSpec:
    """Everything needed to create one function container."""

    image: str
    command: list[str]
    network: str  # a docker network name, or "none"
    binds: dict[str, dict[str, str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    runtime: str = ""  # OCI runtime; the engine's default when empty
    # (stdout, exit code) -> the record; default: the function's one JSON line
    record_parser: Callable[[str, int | None], dict[str, Any]] | None = field(default=None, compare=False)


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
    """Runs function containers like `docker run --rm`: attach, start, read the output stream to
    its end, and let the engine remove the container the moment it exits, so the measured
    lifecycle holds no round trips of the harness after the function is done."""

    def __init__(self, client: docker.DockerClient, events: LifecycleEvents, timeout: float = 60.0) -> None:
        self._api = client.api
        self._events = events
        self._timeout = timeout

    def _create(self, spec: FunctionSpec) -> str:
        host_config = self._api.create_host_config(
            binds=spec.binds or None, network_mode=spec.network, auto_remove=True, runtime=spec.runtime or None
        )
        created = self._api.create_container(
            spec.image, command=spec.command, labels=spec.labels, host_config=host_config
        )
        return str(created["Id"])

    def _attach(self, cid: str) -> Any:
        # Attached before start, so no output is lost however fast the function exits.
        try:
            return self._api.attach_socket(cid, params={"stdout": 1, "stderr": 1, "stream": 1})
        except Exception:
            with contextlib.suppress(docker.errors.APIError):
                self._api.remove_container(cid, force=True)
            raise

    def _start(self, cid: str) -> None:
        try:
            self._api.start(cid)
        except Exception:
            with contextlib.suppress(docker.errors.APIError):
                self._api.remove_container(cid, force=True)  # never started: not auto-removed
            raise

    def _read_output(self, cid: str, sock: Any) -> tuple[str, str, str]:
        """(stdout, stderr, error); kills the container when it outlives the timeout."""
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            with contextlib.suppress(docker.errors.APIError):
                self._api.kill(cid)

        timer = threading.Timer(self._timeout, kill)
        timer.daemon = True
        timer.start()
        out: list[bytes] = []
        err: list[bytes] = []
        error = ""
        try:
            for stream_id, data in frames_iter(sock, tty=False):
                (out if stream_id == STDOUT else err).append(data)
        except OSError as exc:
            error = f"lost the function's output stream: {exc}"
        finally:
            timer.cancel()
            with contextlib.suppress(OSError):
                sock.close()
        if killed.is_set():
            error = f"function container did not exit within {self._timeout:.0f}s and was killed"
        return b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace"), error

    def _finish(self, cid: str, sock: Any, spec: FunctionSpec | None = None) -> ColdStartResult:
        stdout, stderr, error = self._read_output(cid, sock)
        events: dict[str, int] = {}
        try:
            # create and destroy bound the lifecycle. The engine drops events for a subscriber that
            # lags (>100 ms) under heavy load; a lost start/die only leaves those phases unknown.
            events = self._events.wait(cid, actions=("create", "destroy"), timeout=30.0)
        except EventTimeout as exc:
            error = error or str(exc)
        exit_code = self._events.exit_code(cid)
        self._events.forget(cid)
        record: dict[str, Any] | None = None
        try:
            if spec is not None and spec.record_parser is not None:
                record = spec.record_parser(stdout, exit_code)
            else:
                record = parse_function_record(stdout)
        except ValueError as exc:
            error = error or f"{exc}; exit code {exit_code}; stderr: {stderr.strip()[-300:]!r}"
        if not error and record is not None and not record.get("ok"):
            error = f"function reported failure: {record.get('error')}"
        if not error and exit_code not in (0, None):
            error = f"function exited with code {exit_code}"
        return ColdStartResult(cid, exit_code, stdout, stderr, events, record, error)

    def run(self, spec: FunctionSpec) -> ColdStartResult:
        cid = self._create(spec)
        sock = self._attach(cid)
        self._start(cid)
        return self._finish(cid, sock, spec)

    def run_burst(self, spec: FunctionSpec, n: int) -> list[ColdStartResult]:
        """N cold starts at once: all created and attached first, then started together from N threads."""
        prepared = []
        for _ in range(n):
            cid = self._create(spec)
            prepared.append((cid, self._attach(cid)))
        barrier = threading.Barrier(n)
        results: list[ColdStartResult | None] = [None] * n
        failures: list[BaseException] = []

        def one(i: int) -> None:
            cid, sock = prepared[i]
            try:
                barrier.wait(timeout=30)
                self._start(cid)
                results[i] = self._finish(cid, sock, spec)
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


def _seq(record: dict[str, Any], key: str) -> int:
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _stamp(record: dict[str, Any], key: str) -> int:
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


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
    position: int = -1,
    after_switch: str = "",
    oci_runtime: str = "",
) -> Sample:
    record = result.record or {}
    ev = result.events
    start_to_ready = math.nan
    if "start" in ev and isinstance(record.get("t_main_ns"), int):
        start_to_ready = (int(record["t_main_ns"]) - ev["start"]) / 1e6
    # The stamps, the phases named alike in every arm and what follows from them (phases.py).
    footing: dict[str, Any] = {name: _stamp(record, name) for name in STAMPS}
    footing.update({name: _us(record, name) for name in (*ACQUIRE_RECORD_FIELDS, *PHASES)}, **derived(record))
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
        handoff=str(record.get("handoff") or ""),
        request_rtts_us=";".join(f"{float(v):.1f}" for v in record.get("request_rtts_us") or []),
        language_runtime=str(record.get("runtime") or ""),
        oci_runtime=oci_runtime,
        runtime_startup_us=_us(record, "runtime_startup_us"),
        runtime_init_us=_us(record, "runtime_init_us"),
        query_first_us=_us(record, "query_first_us"),
        query_p50_us=_us(record, "query_p50_us"),
        position=position,
        after_switch=after_switch,
        ssl_import_us=_us(record, "ssl_import_us"),
        tls_context_us=_us(record, "tls_context_us"),
        tls_handshake_us=_us(record, "tls_handshake_us"),
        tls_setup_us=_us(record, "tls_setup_us"),
        tls_version=str(record.get("tls_version") or ""),
        tls_cipher_suite=str(record.get("tls_cipher_suite") or ""),
        tls_path=str(record.get("tls_path") or ""),
        tls_server_seq=_seq(record, "tls_server_seq"),
        tls_client_seq=_seq(record, "tls_client_seq"),
        library=str(record.get("library") or ""),
        **footing,
    )
