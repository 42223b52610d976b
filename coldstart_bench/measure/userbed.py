"""The testbed's part for scenarios from a scenario file (userscenarios.py): the user's backends
(started on the run's network and waited for, or an address of theirs), their pools in the pool
manager, the fd-3 entrypoint for functions that take their connection on fd 3, and each
scenario's function container.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors

from ..userscenarios import UserBackend, UserScenario
from .runner import FunctionSpec


class TestbedParts(Protocol):
    """What the user scenarios need of the testbed (measure.testbed.Testbed)."""

    client: Any
    images: Any
    run_id: str
    labels: dict[str, str]
    socket_volume: str

    @property
    def network_name(self) -> str: ...

    def add_pool(self, name: str, target: str, size: int) -> None: ...


ENTRYPOINT_IMAGE = "cfunction"  # carries the static /usr/local/bin/fd3-entrypoint
ENTRYPOINT_SOURCE = "/usr/local/bin/fd3-entrypoint"
ENTRYPOINT_MOUNT = "/run/cpm-bin"
USER_POOL_SIZE = 16

# Waits inside the run's network (the engine may be remote: this process may not reach it).
_TCP_PROBE = """
import socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), timeout=1).close()
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"{host}:{port} did not accept a TCP connection: {exc}")
        time.sleep(0.1)
"""


class UserBedError(RuntimeError):
    """A user backend or function image is not usable; the message says which and why."""


def image_dirs(scenarios: Mapping[str, UserScenario]) -> dict[str, Path]:
    """Image name -> build directory of every function and backend built from a directory."""
    out: dict[str, Path] = {}
    for user in scenarios.values():
        for source in (user.function, user.backend.source):
            if source is not None and source.build is not None:
                out[source.image_name] = source.build
    return out


def needs_entrypoint(scenarios: Mapping[str, UserScenario]) -> bool:
    return any(u.connection == "fd3" for u in scenarios.values())


def exit_status_parser(pattern: str, mode: str, path: str) -> Any:
    """A record from exit status plus the timing line: ok iff status 0 and a line matches."""
    regex = re.compile(pattern)

    def parse(stdout: str, exit_code: int | None) -> dict[str, Any]:
        match = next((m for line in stdout.splitlines() if (m := regex.search(line))), None)
        if match is None:
            raise ValueError(f"no stdout line matches the timing_line {pattern!r}: {stdout[-300:]!r}")
        groups = match.groupdict()
        record: dict[str, Any] = {"ok": exit_code == 0, "mode": mode, "path": path}
        for key in ("connect_us", "request_rtt_us"):
            if groups.get(key) is not None:
                try:
                    record[key] = float(groups[key])
                except ValueError:
                    raise ValueError(f"timing_line group {key} is not a number: {groups[key]!r}") from None
        if exit_code != 0:
            record["error"] = f"exit status {exit_code}"
        return record

    return parse


class UserBed:
    """Started lazily, per backend, when the first scenario using it is prepared."""

    def __init__(
        self,
        testbed: TestbedParts,
        scenarios: Mapping[str, UserScenario],
        images: Mapping[str, str],
        socket_mount: str = "/run/cpm",
        socket_name: str = "pool.sock",
    ) -> None:
        self.testbed = testbed
        self.socket_mount, self.socket_name = socket_mount, socket_name
        self.scenarios = dict(scenarios)
        self.images = dict(images)  # image name (of a build directory) -> tag
        self.started: dict[str, Any] = {}  # backend name -> container
        self.targets: dict[str, str] = {}  # backend name -> host:port as functions reach it
        self.entrypoint_volume = ""

    def handles(self, scenario_id: str) -> bool:
        return scenario_id in self.scenarios

    def backend_name(self, backend: UserBackend) -> str:
        return f"csb-user-{backend.name}-{self.testbed.run_id}"

    def image_of(self, user_source: Any) -> str:
        if user_source.build is not None:
            return self.images[user_source.image_name]
        return str(user_source.image)

    # --- testbed state -----------------------------------------------------------------------
    def prepare(self, scenario_id: str) -> None:
        user = self.scenarios[scenario_id]
        if user.runtime:
            self.check_runtime(user.runtime)
        target = self.ensure_backend(user.backend)
        if user.connection != "direct":
            self.testbed.add_pool(user.backend.name, target, USER_POOL_SIZE)
        if user.connection == "fd3":
            self.ensure_entrypoint()

    def check_runtime(self, name: str) -> None:
        from .runtimes import engine_runtimes, missing_runtime_message

        offered = engine_runtimes(self.testbed.client)
        if name not in offered:
            raise UserBedError(missing_runtime_message(name, offered))

    def ensure_backend(self, backend: UserBackend) -> str:
        if backend.name in self.targets:
            return self.targets[backend.name]
        if backend.external:
            self.targets[backend.name] = backend.address
            return backend.address
        assert backend.source is not None and backend.port is not None
        client = self.testbed.client
        name = self.backend_name(backend)
        image = self.image_of(backend.source)
        try:
            container = client.containers.run(
                image,
                list(backend.command) or None,
                name=name,
                network=self.testbed.network_name,
                labels=self.testbed.labels,
                detach=True,
            )
        except docker.errors.ImageNotFound:
            msg = f"backend {backend.name}: image {image!r} is not on the engine (pull or build it)"
            raise UserBedError(msg) from None
        except docker.errors.APIError as exc:
            raise UserBedError(f"backend {backend.name} ({image}) did not start: {exc.explanation or exc}") from None
        self.started[backend.name] = container
        if backend.ready_log:
            self._wait_for_log(container, backend)
        if backend.ready_tcp:
            self._wait_for_tcp(name, backend)
        target = f"{name}:{backend.port}"
        self.targets[backend.name] = target
        return target

    def _wait_for_log(self, container: Any, backend: UserBackend) -> None:
        regex = re.compile(backend.ready_log)
        deadline = time.monotonic() + backend.ready_timeout_s
        logs = ""
        while True:
            try:
                container.reload()
                logs = container.logs().decode("utf-8", "replace")
            except docker.errors.NotFound:
                raise UserBedError(f"backend {backend.name}: its container is gone") from None
            if any(regex.search(line) for line in logs.splitlines()):
                return
            if container.status in ("exited", "dead"):
                raise UserBedError(
                    f"backend {backend.name} exited before it was ready; last log lines:\n{logs[-1500:]}"
                )
            if time.monotonic() > deadline:
                raise UserBedError(
                    f"backend {backend.name}: no log line matched ready_log {backend.ready_log!r} within "
                    f"{backend.ready_timeout_s:g} s; last log lines:\n{logs[-1500:]}"
                )
            time.sleep(0.1)

    def _wait_for_tcp(self, name: str, backend: UserBackend) -> None:
        try:
            self.testbed.client.containers.run(
                self.testbed.images.pool,
                ["python3", "-c", _TCP_PROBE, name, str(backend.port), str(backend.ready_timeout_s)],
                network=self.testbed.network_name,
                labels=self.testbed.labels,
                remove=True,
            )
        except docker.errors.ContainerError as exc:
            detail = exc.stderr.decode("utf-8", "replace").strip() if isinstance(exc.stderr, bytes) else exc
            raise UserBedError(f"backend {backend.name} not ready (ready_tcp): {detail}") from None

    def ensure_entrypoint(self) -> None:
        """Copy the static fd-3 entrypoint into a volume every fd-3 function mounts read-only."""
        if self.entrypoint_volume:
            return
        from .volumes import create_volume

        client = self.testbed.client
        volume = create_volume(client, f"csb-bin-{self.testbed.run_id}", self.testbed.labels)
        source = client.containers.create(
            self.testbed.images.extra[ENTRYPOINT_IMAGE], ["true"], labels=self.testbed.labels, network_mode="none"
        )
        try:
            stream, _stat = source.get_archive(ENTRYPOINT_SOURCE)
            data = b"".join(stream)
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                source.remove(force=True)
        helper = client.containers.create(
            self.testbed.images.pool,
            ["true"],
            volumes={volume: {"bind": "/volume", "mode": "rw"}},
            labels=self.testbed.labels,
            network_mode="none",
        )
        try:
            if not helper.put_archive("/volume", data):
                raise UserBedError(f"the engine refused to write the fd-3 entrypoint into volume {volume}")
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                helper.remove(force=True)
        self.entrypoint_volume = volume

    # --- the function ------------------------------------------------------------------------
    def function_spec(self, scenario_id: str) -> FunctionSpec:
        user = self.scenarios[scenario_id]
        socket_path = f"{self.socket_mount}/{self.socket_name}"
        target = self.targets.get(user.backend.name) or self.ensure_backend(user.backend)
        command = user.render_command(target, socket_path, user.backend.name)
        binds: dict[str, dict[str, str]] = {}
        if user.connection != "direct":
            binds[self.testbed.socket_volume] = {"bind": self.socket_mount, "mode": "rw"}
        if user.connection == "fd3":
            binds[self.entrypoint_volume] = {"bind": ENTRYPOINT_MOUNT, "mode": "ro"}
            entry = f"{ENTRYPOINT_MOUNT}/{Path(ENTRYPOINT_SOURCE).name}"
            command = [entry, "--socket", socket_path, "--pool", user.backend.name, "--", *command]
        mode = "direct" if user.connection == "direct" else "socket"
        path = "fd3" if user.connection == "fd3" else mode
        parser = exit_status_parser(user.timing_line, mode, path) if user.success == "exit-status" else None
        return FunctionSpec(
            image=self.image_of(user.function),
            command=command,
            network="none" if user.network == "none" else self.testbed.network_name,
            binds=binds,
            labels={**self.testbed.labels, "coldstart-bench.role": "function"},
            runtime=user.runtime,
            record_parser=parser,
        )

    def close(self) -> None:
        for container in self.started.values():
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)
        self.started.clear()
        self.targets.clear()
