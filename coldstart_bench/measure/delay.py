"""Apply a SYN-ACK delay (or, scope "all", a delay on every packet the server sends: a round-trip
time) to a running server container, as a sidecar.

The sidecar runs ``components.synack_delay`` from the ``delay`` image inside the
target's network namespace (``network_mode=container:<id>``) with NET_ADMIN, so
the target itself needs no extra capability. Stopping the sidecar (SIGTERM)
removes its qdisc or iptables rule; the container is then removed.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import docker
import docker.errors

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10
_POLL_S = 0.05

_backend_cache: dict[str, str] = {}


class DelayError(RuntimeError):
    """The delay could not be applied; the message carries the sidecar's logs."""


def _logs(container: Any) -> str:
    try:
        return bytes(container.logs(stdout=True, stderr=True)).decode(errors="replace")
    except docker.errors.APIError as exc:
        return f"<logs unavailable: {exc}>"


def _json_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def _remove(container: Any) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True)


class SynAckDelay:
    """Context manager: the target's outgoing SYN-ACKs on ``port`` are delayed while inside.

    >>> with SynAckDelay(client, images.delay, echo.id, 7000, 50) as delay:
    ...     delay.backend  # "netem" or "nfqueue"
    """

    def __init__(
        self,
        client: docker.DockerClient,
        image: str,
        target_container_id: str,
        port: int,
        delay_ms: float,
        backend: str = "auto",
        labels: dict[str, str] | None = None,
        scope: str = "synack",
    ) -> None:
        if delay_ms <= 0:
            raise ValueError("delay_ms must be > 0")
        if scope not in ("synack", "all"):
            raise ValueError(f"scope must be synack or all, got {scope!r}")
        self.scope = scope
        self.client = client
        self.image = image
        self.target_container_id = target_container_id
        self.port = port
        self.delay_ms = delay_ms
        self.requested_backend = backend
        self.labels = dict(labels or {})
        self.backend: str | None = None
        self.ready_record: dict[str, Any] | None = None
        self.container: Any = None
        # After stop(): whether the sidecar removed its own qdisc/rule (else a cleanup ran).
        self.clean_exit: bool | None = None

    def command(self) -> list[str]:
        return [
            "python3", "-m", "components.synack_delay",
            "--delay-ms", f"{self.delay_ms:g}",
            "--port", str(self.port),
            "--backend", self.requested_backend,
            "--scope", self.scope,
        ]  # fmt: skip

    def start(self, timeout: float = READY_TIMEOUT_S) -> SynAckDelay:
        if self.container is not None:
            return self
        try:
            self.container = self.client.containers.run(
                self.image,
                self.command(),
                detach=True,
                network_mode=f"container:{self.target_container_id}",
                cap_add=["NET_ADMIN"],
                labels={**self.labels, "coldstart-bench.role": "synack-delay"},
            )
        except docker.errors.APIError as exc:
            raise DelayError(
                f"cannot start the SYN-ACK delay sidecar in the network namespace of "
                f"{self.target_container_id[:12]} (is it running?): {exc}"
            ) from exc
        self.clean_exit = None
        try:
            self.ready_record = self._wait_ready(timeout)
        except BaseException:
            _remove(self.container)
            self.container = None
            raise
        self.backend = str(self.ready_record.get("backend"))
        return self

    def _wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            text = _logs(self.container)
            for record in _json_lines(text):
                if record.get("event") == "ready":
                    return record
            self.container.reload()
            status = self.container.status
            if status in ("exited", "dead"):
                code = self.container.attrs.get("State", {}).get("ExitCode")
                raise DelayError(
                    f"SYN-ACK delay sidecar ({self.image}) exited with code {code} before it was ready "
                    f"(target {self.target_container_id[:12]}, port {self.port}, {self.delay_ms:g} ms); "
                    f"logs:\n{text.strip()}"
                )
            if time.monotonic() >= deadline:
                raise DelayError(
                    f"SYN-ACK delay sidecar ({self.image}) not ready within {timeout:.0f} s "
                    f"(status {status}); logs:\n{text.strip()}"
                )
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """Remove the delay (the sidecar cleans up its rule on SIGTERM) and the sidecar."""
        container, self.container = self.container, None
        if container is None:
            return
        try:
            container.stop(timeout=STOP_TIMEOUT_S)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            pass
        self.clean_exit = any(r.get("event") == "stopped" for r in _json_lines(_logs(container)))
        _remove(container)
        if not self.clean_exit:
            self._cleanup_after_kill()

    def _cleanup_after_kill(self) -> None:
        # The sidecar did not get to remove its qdisc/rule (killed, or crashed):
        # a netem qdisc would otherwise keep delaying the target's handshakes.
        # If the target is gone there is nothing left to clean: errors are moot.
        with contextlib.suppress(docker.errors.DockerException):
            self.client.containers.run(
                self.image,
                ["python3", "-m", "components.synack_delay", "--cleanup", "--port", str(self.port)],
                network_mode=f"container:{self.target_container_id}",
                cap_add=["NET_ADMIN"],
                labels={**self.labels, "coldstart-bench.role": "synack-delay-cleanup"},
                remove=True,
            )

    def __enter__(self) -> SynAckDelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def detect_delay_backend(client: docker.DockerClient, image: str, labels: dict[str, str] | None = None) -> str:
    """The backend ``auto`` picks on this engine's kernel ("netem" or "nfqueue"); probed once.

    The probe runs in a throwaway container with no network (only loopback is
    touched), so it never affects other traffic. Raises DelayError if neither works.
    """
    key = str(client.images.get(image).id)
    if key in _backend_cache:
        return _backend_cache[key]
    container = client.containers.run(
        image,
        ["python3", "-m", "components.synack_delay", "--probe"],
        detach=True,
        network_mode="none",
        cap_add=["NET_ADMIN"],
        labels={**(labels or {}), "coldstart-bench.role": "synack-delay-probe"},
    )
    try:
        result = container.wait(timeout=60)
        text = _logs(container)
    finally:
        _remove(container)
    probes = [r for r in _json_lines(text) if r.get("event") == "probe"]
    if result.get("StatusCode") != 0 or not probes or not probes[-1].get("backend"):
        raise DelayError(f"no SYN-ACK delay backend works on this kernel; probe output:\n{text.strip()}")
    backend = str(probes[-1]["backend"])
    _backend_cache[key] = backend
    return backend
