"""The long-lived parts of a run: network, echo server, pool manager, SYN-ACK delay.

Built on testcontainers (Ryuk off: no image can be pulled for it, and the harness removes
everything it created itself, labelled with the run id, even after Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker
import docker.errors
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from ..catalogue import Scenario
from .runner import FunctionSpec

if TYPE_CHECKING:
    from ..options import ExternalPg
    from .database import ExternalPostgres, PostgresBackend
    from .delay import SynAckDelay
    from .images import ImageSet

LABEL = "coldstart-bench"
LABEL_RUN = "coldstart-bench.run"
LABEL_PID = "coldstart-bench.pid"
SOCKET_MOUNT = "/run/cpm"
SOCKET_NAME = "pool.sock"
# Credentials and the manager's config live apart from the socket: functions that get an
# injected session never see them (only the pool manager and direct-mode functions mount it).
SECRET_MOUNT = "/run/cpm-secret"
READY = r'"event":\s*"ready"'


class TestbedError(RuntimeError):
    """A long-lived component failed; the message says which and shows its last log lines."""


@dataclass(frozen=True)
class TestbedConfig:
    __test__ = False

    pool_size: int = 32
    echo_port: int = 7000
    pool_name: str = "echo"
    payload_size: int = 64
    start_timeout: float = 60.0
    pg_external: ExternalPg | None = None  # your own PostgreSQL instead of the database container


def run_labels(run_id: str) -> dict[str, str]:
    return {LABEL: "1", LABEL_RUN: run_id, LABEL_PID: str(os.getpid())}


def _tail(container: Any, lines: int = 15) -> str:
    try:
        raw = container.logs(tail=lines)
        return raw.decode("utf-8", "replace").strip() if isinstance(raw, bytes) else str(raw)
    except Exception:
        return "(no logs)"


class Testbed:
    """Owns the echo server, the pool manager and the delay sidecar for one run."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self, client: docker.DockerClient, images: ImageSet, run_id: str, config: TestbedConfig | None = None
    ) -> None:
        self.client = client
        self.images = images
        self.run_id = run_id
        self.config = config or TestbedConfig()
        self.labels = run_labels(run_id)
        self.socket_dir = Path(tempfile.mkdtemp(prefix=f"csb-{run_id[-8:]}-", dir="/tmp"))
        self.socket_dir.chmod(0o755)
        self.secret_dir = Path(tempfile.mkdtemp(prefix=f"csb-{run_id[-8:]}-secret-", dir="/tmp"))
        self.pg: PostgresBackend | ExternalPostgres | None = None
        self.pg_cold_starts_ok = 0  # successful pg function runs, warm-ups included: each commits one transfer
        self.pg_transfers_before = 0  # transfers already in the database when the run started
        self.delay_target = "echo"
        self.network: Network | None = None
        self.echo: DockerContainer | None = None
        self.pool: DockerContainer | None = None
        self.delay: SynAckDelay | None = None
        self.delay_ms: float = 0.0
        self.delay_backends: set[str] = set()

    # --- names -----------------------------------------------------------------------------
    @property
    def network_name(self) -> str:
        return f"csb-net-{self.run_id}"

    @property
    def echo_name(self) -> str:
        return f"csb-echo-{self.run_id}"

    @property
    def pool_name(self) -> str:
        return f"csb-pool-{self.run_id}"

    @property
    def target(self) -> str:
        return f"{self.echo_name}:{self.config.echo_port}"

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> Testbed:
        net = Network(docker_network_kw={"driver": "bridge", "labels": self.labels})
        net.name = self.network_name
        self.network = net.create()
        self.echo = self._start_container(
            self.images.echo,
            self.echo_name,
            [
                "python3",
                "-m",
                "components.echo_server",
                "--host",
                "0.0.0.0",
                "--port",
                str(self.config.echo_port),
            ],
        )
        self.start_pool()
        return self

    def _start_container(
        self,
        image: str,
        name: str,
        command: list[str],
        volumes: tuple[tuple[Path, str, str], ...] = (),
    ) -> DockerContainer:
        """Start a long-lived component on the run's network and wait for its readiness line; on
        failure remove it and raise with its last log lines."""
        container = (
            DockerContainer(image)
            .with_name(name)
            .with_command(command)
            .with_kwargs(labels=self.labels, network=self.network_name)
            .waiting_for(LogMessageWaitStrategy(READY).with_startup_timeout(int(self.config.start_timeout)))
        )
        for host, bind, mode in volumes:
            container = container.with_volume_mapping(str(host), bind, mode)
        try:
            return container.start()
        except Exception as exc:
            wrapped = container._container
            logs = _tail(wrapped) if wrapped is not None else "(container not created)"
            if wrapped is not None:
                with contextlib.suppress(docker.errors.APIError):
                    wrapped.remove(force=True)
            raise TestbedError(f"{name} ({image}) did not become ready: {exc}\nlast log lines:\n{logs}") from exc

    @property
    def pg_name(self) -> str:
        return f"csb-pg-{self.run_id}"

    def pool_command(self) -> list[str]:
        if self.pg is not None:
            return ["python3", "-m", "components.pool_manager", "--config", f"{SECRET_MOUNT}/pool.json"]
        return [
            "python3", "-m", "components.pool_manager",
            "--target", self.target,
            "--size", str(self.config.pool_size),
            "--socket", f"{SOCKET_MOUNT}/{SOCKET_NAME}",
            "--pool", self.config.pool_name,
        ]  # fmt: skip

    def start_pool(self) -> None:
        if self.pool is not None:
            return
        # The postgres pool kind needs the driver, which the pgfunction image carries.
        image = self.images.extra["pgfunction"] if self.pg is not None else self.images.pool
        self.pool = self._start_container(
            image,
            self.pool_name,
            self.pool_command(),
            volumes=((self.socket_dir, SOCKET_MOUNT, "rw"), (self.secret_dir, SECRET_MOUNT, "ro")),
        )

    def stop_pool(self) -> None:
        if self.pool is not None:
            self.pool.stop()
            self.pool = None

    def pool_status(self) -> str:
        """'running', or what happened to the pool manager, with its last log lines."""
        if self.pool is None:
            return "stopped by the harness"
        wrapped = self.pool.get_wrapped_container()
        try:
            wrapped.reload()
        except docker.errors.NotFound:
            return "container is gone (removed outside the harness)"
        state = wrapped.attrs.get("State", {})
        if state.get("Running"):
            return "running"
        return f"exited with code {state.get('ExitCode')} ({state.get('Error') or 'no error'}); logs:\n{_tail(wrapped)}"

    def ensure_pg(self) -> PostgresBackend | ExternalPostgres:
        """Start (or reach) the database once, then restart the pool manager with an
        authenticated-session pool."""
        if self.pg is not None:
            return self.pg
        from .database import ExternalPostgres, PostgresBackend, manager_config

        backend: PostgresBackend | ExternalPostgres
        ext = self.config.pg_external
        if ext is not None:
            backend = ExternalPostgres(ext.host, ext.port, ext.user, ext.database, password_file=str(ext.password_file))
            backend.load_schema()
        else:
            backend = PostgresBackend(self.client, self.images.extra["postgres"], self.network_name, self.pg_name,
                                      self.labels, publish=False).start()  # fmt: skip
        self.pg = backend
        self.pg_transfers_before = backend.check_balances()[0]
        backend.write_password_file(self.secret_dir)
        pools = {
            self.config.pool_name: {"target": self.target, "size": self.config.pool_size},
            **backend.pool_config(backend.target, f"{SECRET_MOUNT}/pgpassword", size=min(self.config.pool_size, 16)),
        }
        (self.secret_dir / "pool.json").write_text(manager_config(f"{SOCKET_MOUNT}/{SOCKET_NAME}", pools))
        self.secret_dir.chmod(0o755)
        self.stop_pool()
        self.start_pool()
        return backend

    def set_delay(self, delay_ms: float, target: str = "echo") -> str | None:
        """Apply the SYN-ACK delay of a scenario to a backend (or remove it); returns the backend used."""
        if delay_ms == self.delay_ms and target == self.delay_target and (self.delay is not None or delay_ms == 0):
            return self.delay.backend if self.delay else None
        if self.delay is not None:
            self.delay.stop()
            self.delay = None
            self.delay_ms = 0.0
        if delay_ms > 0:
            from .delay import SynAckDelay

            if target == "pg":
                from .database import PostgresBackend

                if not isinstance(self.pg, PostgresBackend):
                    raise TestbedError("a SYN-ACK delay needs the database container, not an external server")
                container_id, port = self.pg.container_id, self.pg.port
            else:
                assert self.echo is not None
                container_id, port = self.echo.get_wrapped_container().id, self.config.echo_port
            self.delay = SynAckDelay(
                self.client, self.images.delay, container_id, port, delay_ms, labels=self.labels
            ).start()
            self.delay_ms = delay_ms
            self.delay_target = target
            if self.delay.backend:
                self.delay_backends.add(self.delay.backend)
            return self.delay.backend
        return None

    def prepare(self, scenario: Scenario) -> None:
        """Bring the testbed into the state a scenario needs."""
        if scenario.backend == "pg":
            self.ensure_pg()
        self.set_delay(scenario.delay_ms, scenario.backend)
        if scenario.pool_up:
            self.start_pool()
        else:
            self.stop_pool()

    def function_spec(self, scenario: Scenario) -> FunctionSpec:
        if scenario.backend == "pg":
            return self._pg_function_spec(scenario)
        command = [
            "python3", "-m", "components.function",
            "--mode", scenario.mode,
            "--target", self.target,
            "--socket", f"{SOCKET_MOUNT}/{SOCKET_NAME}",
            "--pool", self.config.pool_name,
            "--payload-size", str(self.config.payload_size),
        ]  # fmt: skip
        if scenario.release:
            command.append("--release")
        return FunctionSpec(
            image=self.images.function,
            command=command,
            network="none" if scenario.network == "none" else self.network_name,
            binds={str(self.socket_dir): {"bind": SOCKET_MOUNT, "mode": "rw"}},
            labels={**self.labels, "coldstart-bench.role": "function"},
        )

    def _pg_function_spec(self, scenario: Scenario) -> FunctionSpec:
        assert self.pg is not None
        command = [
            "python3", "-m", "components.pg_function",
            "--mode", scenario.mode,
            "--host", self.pg.host, "--port", str(self.pg.port),
            "--database", self.pg.database, "--user", self.pg.user,
            "--socket", f"{SOCKET_MOUNT}/{SOCKET_NAME}", "--pool", "pg",
        ]  # fmt: skip
        binds = {str(self.socket_dir): {"bind": SOCKET_MOUNT, "mode": "rw"}}
        if scenario.mode == "direct":
            # Only a function that authenticates itself gets the credential.
            command += ["--password-file", f"{SECRET_MOUNT}/pgpassword"]
            binds[str(self.secret_dir)] = {"bind": SECRET_MOUNT, "mode": "ro"}
        return FunctionSpec(
            image=self.images.extra["pgfunction"],
            command=command,
            network="none" if scenario.network == "none" else self.network_name,
            binds=binds,
            labels={**self.labels, "coldstart-bench.role": "function"},
        )

    def close(self) -> None:
        errors: list[str] = []
        for step in (self._close_delay, self.stop_pool, self._close_pg, self._close_echo, self._close_network):
            try:
                step()
            except Exception as exc:
                errors.append(f"{step.__name__}: {exc}")
        sweep(self.client, self.run_id)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        shutil.rmtree(self.secret_dir, ignore_errors=True)
        if errors:
            raise TestbedError("cleanup incomplete: " + "; ".join(errors))

    def _close_delay(self) -> None:
        if self.delay is not None:
            self.delay.stop()
            self.delay = None

    def _close_pg(self) -> None:
        from .database import PostgresBackend

        if isinstance(self.pg, PostgresBackend):
            self.pg.stop()
        self.pg = None

    def _close_echo(self) -> None:
        if self.echo is not None:
            self.echo.stop()
            self.echo = None

    def _close_network(self) -> None:
        if self.network is not None:
            self.network.remove()
            self.network = None

    def __enter__(self) -> Testbed:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


def sweep(client: docker.DockerClient, run_id: str | None = None) -> list[str]:
    """Remove containers and networks of one run (or of every run whose process is gone)."""
    removed: list[str] = []
    label = f"{LABEL_RUN}={run_id}" if run_id else LABEL
    # ignore_removed: another run may remove its containers between the listing and their inspection.
    for container in client.containers.list(all=True, filters={"label": label}, ignore_removed=True):
        if run_id is None and _owner_alive(container.labels):
            continue
        try:
            container.remove(force=True)
            removed.append(container.name)
        except docker.errors.NotFound:
            pass
    for network in client.networks.list(filters={"label": label}):
        if run_id is None and _owner_alive(network.attrs.get("Labels") or {}):
            continue
        try:
            network.remove()
            removed.append(network.name)
        except docker.errors.NotFound:
            pass
    return removed


def _owner_alive(labels: dict[str, str]) -> bool:
    """Whether the process that created a resource still runs; without a pid label we cannot
    tell, so the resource is left alone."""
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return True
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
