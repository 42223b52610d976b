"""The long-lived parts of a run: network, echo server, pool manager, SYN-ACK delay.

Built on testcontainers (Ryuk off: no image can be pulled for it, and the harness removes
everything it created itself, labelled with the run id, even after Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker
import docker.errors
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from ..catalogue import Scenario
from . import function_specs
from .accounting import HandoutLedger, SessionLedger, wait_settled
from .runner import ColdStartResult, FunctionSpec
from .volumes import VolumeFile, create_volume, put_files, remove_volume

if TYPE_CHECKING:
    from ..options import ExternalPg
    from ..userscenarios import UserScenario
    from .database import ExternalPostgres, PostgresBackend
    from .delay import SynAckDelay
    from .images import ImageSet
    from .pgbouncer import PgBouncerContainer
    from .tls_testbed import TlsTestbed
    from .userbed import UserBed

LABEL = "coldstart-bench"
LABEL_RUN = "coldstart-bench.run"
LABEL_PID = "coldstart-bench.pid"
# The pid is only meaningful on the machine that created the resource: a remote engine may be
# shared by harnesses on several hosts, and one must not sweep another's live run.
LABEL_HOST = "coldstart-bench.host"
SOCKET_MOUNT = "/run/cpm"
SOCKET_NAME = "pool.sock"
# Credentials and the manager's config live apart from the socket: functions that get an
# injected session never see them (only the pool manager and direct-mode functions mount it).
SECRET_MOUNT = "/run/cpm-secret"
READY = r'"event":\s*"ready"'
STATS_SNIPPET = (
    "import json, sys; from components.protocol import request; print(json.dumps(request(sys.argv[1], 'stats')))"
)
# The pool manager restarts between blocks (fallback scenarios): the wait strategy's default 1 s poll
# would round every restart up to whole seconds of wall time with nothing measured.
READY_POLL_S = 0.05


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
    runtimes: tuple[str, ...] = ("runc",)  # probed at start (measure/runtime_axis.py)
    requests: int = 1  # echo round trips per cold start
    prefetch: bool = True  # the echo function pages in its code before any clock (components/prefetch.py)


def run_labels(run_id: str) -> dict[str, str]:
    return {LABEL: "1", LABEL_RUN: run_id, LABEL_PID: str(os.getpid()), LABEL_HOST: socket.gethostname()}


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
        # Named volumes, not host directories: they live on the engine's host, local or remote
        # (DOCKER_HOST), and are created on start, removed on close (and by sweep).
        self.socket_volume = f"csb-sock-{run_id}"
        self.secret_volume = f"csb-secret-{run_id}"
        self.pg: PostgresBackend | ExternalPostgres | None = None
        self.pg_cold_starts_ok = 0  # successful pg function runs, warm-ups included: each commits one transfer
        self.pg_transfers_before = 0  # transfers already in the database when the run started
        self.delay_target = "echo"
        self.delay_scope = "synack"  # "all" while a round-trip time (--bench-rtt) is applied
        self.network: Network | None = None
        self.echo: DockerContainer | None = None
        self.pool: DockerContainer | None = None
        self.delay: SynAckDelay | None = None
        self.delay_ms: float = 0.0
        self.delay_backends: set[str] = set()
        self.tls: TlsTestbed | None = None  # the TLS backend, certificates and accounting (first TLS scenario)
        self.tls_echo: DockerContainer | None = None
        from .runtime_axis import RelayTotals, RuntimeSupport

        self.runtime_support: RuntimeSupport | None = None
        self.relay_totals = RelayTotals()
        self.pgbouncer: PgBouncerContainer | None = None
        self.handouts = HandoutLedger()
        self.sessions: SessionLedger | None = None  # with the database container: server sessions per arm
        self.pg_tls_ca: bytes | None = None  # the database container's CA when it speaks TLS
        self.user: UserBed | None = None  # scenarios from a scenario file (measure/userbed.py)
        self.extra_pools: dict[str, dict[str, Any]] = {}  # pools beside echo's: user backends
        self._pg_pools: dict[str, Any] = {}

    def add_user_scenarios(self, scenarios: Mapping[str, UserScenario]) -> None:
        from .userbed import UserBed

        self.user = UserBed(self, scenarios, self.images.extra, SOCKET_MOUNT, SOCKET_NAME)

    def add_pool(self, name: str, target: str, size: int) -> None:
        """Serve a further plain tcp pool; the pool manager restarts with the new config."""
        entry = {"target": target, "size": min(size, self.config.pool_size)}
        if self.extra_pools.get(name) == entry:
            return
        self.extra_pools[name] = entry
        self._write_pool_config()
        self.stop_pool()
        self.start_pool()

    def _write_pool_config(self) -> None:
        from .database import manager_config

        pools = {
            self.config.pool_name: {"target": self.target, "size": self.config.pool_size},
            **self.extra_pools,
            **self._pg_pools,
        }
        if self.tls is not None:
            from .tls_testbed import TLS_POOL

            pools[TLS_POOL] = self.tls.pool_entry(min(self.config.pool_size, 16))
        config = manager_config(f"{SOCKET_MOUNT}/{SOCKET_NAME}", pools).encode()
        put_files(self.client, self.secret_volume, {"pool.json": VolumeFile(config)}, self.images.pool, self.labels)

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
        create_volume(self.client, self.socket_volume, self.labels)
        create_volume(self.client, self.secret_volume, self.labels)
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
        self.probe_runtimes()
        return self

    def probe_runtimes(self) -> None:
        """Once per run: what each selected runtime does with handed fds (verdicts per scenario)."""
        from .runtime_axis import probe_selected

        self.runtime_support = probe_selected(self.client, self.config.runtimes, self.images.base, self.labels)

    def _start_container(
        self,
        image: str,
        name: str,
        command: list[str],
        volumes: tuple[tuple[str, str, str], ...] = (),
    ) -> DockerContainer:
        """Start a long-lived component on the run's network and wait for its readiness line; on
        failure remove it and raise with its last log lines."""
        container = (
            DockerContainer(image)
            .with_name(name)
            .with_command(command)
            .with_kwargs(labels=self.labels, network=self.network_name)
            .waiting_for(
                LogMessageWaitStrategy(READY)
                .with_startup_timeout(int(self.config.start_timeout))
                .with_poll_interval(READY_POLL_S)
            )
        )
        for source, bind, mode in volumes:
            container = container.with_volume_mapping(source, bind, mode)
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
        if self.pg is not None or self.extra_pools or self.tls is not None:
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
        volumes: list[tuple[str, str, str]] = [
            (self.socket_volume, SOCKET_MOUNT, "rw"),
            (self.secret_volume, SECRET_MOUNT, "ro"),
        ]
        if self.tls is not None:
            ca_dir, ca_bind, ca_mode = self.tls.ca_volume()
            volumes.append((str(ca_dir), ca_bind, ca_mode))
        if self.sessions is not None:
            self.sessions.touch()  # a starting manager opens its pool's sessions
        self.pool = self._start_container(image, self.pool_name, self.pool_command(), volumes=tuple(volumes))

    def stop_pool(self) -> None:
        if self.pool is not None:
            stats = self.manager_stats()  # its counters end with it
            self.handouts.retire(stats)
            relay = stats.get("relay") if stats else None
            if isinstance(relay, dict):
                self.relay_totals.add(dict(relay))
            if self.tls is not None:
                self._tally_tls_pool(stats)
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
        from .database import ExternalPostgres, PostgresBackend

        backend: PostgresBackend | ExternalPostgres
        ext = self.config.pg_external
        if ext is not None:
            backend = ExternalPostgres(ext.host, ext.port, ext.user, ext.database, password_file=str(ext.password_file))
            backend.load_schema()
        else:
            tls_volume = self._pg_tls_volume()
            backend = PostgresBackend(self.client, self.images.extra["postgres"], self.network_name, self.pg_name,
                                      self.labels, publish=False, tls_volume=tls_volume).start()  # fmt: skip
        self.pg = backend
        self.pg_transfers_before = backend.check_balances()[0]
        if isinstance(backend, PostgresBackend):  # an external server has other clients: not counted
            from .pgbouncer import sessions_opened

            self.sessions = SessionLedger(lambda: sessions_opened(backend), self._settle_pools)
        self._pg_pools = backend.pool_config(
            backend.target, f"{SECRET_MOUNT}/pgpassword", size=min(self.config.pool_size, 16)
        )
        # Mode 0644: containers may run as another uid; only the manager and direct functions mount it.
        files = {"pgpassword": VolumeFile((backend.password + "\n").encode())}
        if self.pg_tls_ca is not None:
            files["pg-ca.pem"] = VolumeFile(self.pg_tls_ca)
        put_files(self.client, self.secret_volume, files, self.images.pool, self.labels)
        self._write_pool_config()
        self.stop_pool()
        self.start_pool()
        return backend

    def _pg_tls_volume(self) -> str | None:
        """The database container's certificate and key (a per-run CA, the container's name) in a
        volume only it mounts; None without the openssl command (the pg-tls scenarios then refuse)."""
        import shutil
        import tempfile

        from .tls_certs import make_run_certificates, openssl_path

        if openssl_path() is None:
            return None
        directory = tempfile.mkdtemp(prefix=f"csb-{self.run_id[-8:]}-pgtls-", dir="/tmp")
        try:
            certs = make_run_certificates(directory, (self.pg_name,))
            # Readable by the server's uid inside the volume; start.sh copies it to a 0600 file of its own.
            files = {
                "server.pem": VolumeFile(certs.server_cert.read_bytes()),
                "server.key": VolumeFile(certs.server_key.read_bytes(), 0o644),
            }
            self.pg_tls_ca = certs.ca_cert.read_bytes()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        volume = f"csb-pgtls-{self.run_id}"
        create_volume(self.client, volume, self.labels)
        put_files(self.client, volume, files, self.images.pool, self.labels)
        return volume

    def ensure_pg_tls(self) -> None:
        """The database over TLS: a `pgtls` pool (SSLRequest, verified TLS 1.3, SCRAM in the manager)
        beside the plain one, added once."""
        from .database import SECRET_CA_NAME, TLS_POOL_NAME, PostgresBackend

        backend = self.ensure_pg()
        if TLS_POOL_NAME in self._pg_pools:
            return
        if not isinstance(backend, PostgresBackend) or self.pg_tls_ca is None:
            raise TestbedError(
                "PostgreSQL over TLS needs the database container with its per-run certificate "
                "(not an external server; the openssl command makes the certificate)"
            )
        self._pg_pools |= backend.pool_config(
            backend.target,
            f"{SECRET_MOUNT}/pgpassword",
            size=min(self.config.pool_size, 16),
            name=TLS_POOL_NAME,
            sslmode="verify-full",
            ca_file=f"{SECRET_MOUNT}/{SECRET_CA_NAME}",
            server_name=self.pg_name,
            handoff="auto",
        )
        if self.sessions is not None:
            self.sessions.touch()  # the restarted manager opens both pools' sessions
        self._restart_pool_with_config()

    def _restart_pool_with_config(self) -> None:
        """The manager with every pool the run needs so far (echo, PostgreSQL, TLS, user backends)."""
        self._write_pool_config()
        self.stop_pool()
        self.start_pool()

    def set_delay(self, delay_ms: float, target: str = "echo", scope: str = "synack") -> str | None:
        """Apply the SYN-ACK delay of a scenario to a backend (or remove it); with scope "all" every
        packet the backend sends is delayed (a round-trip time). Returns the delay backend used."""
        same = delay_ms == self.delay_ms and target == self.delay_target and scope == self.delay_scope
        if same and (self.delay is not None or delay_ms == 0):
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
            elif target == "tls":
                from .tls_testbed import TLS_PORT

                assert self.tls_echo is not None
                container_id, port = self.tls_echo.get_wrapped_container().id, TLS_PORT
            else:
                assert self.echo is not None
                container_id, port = self.echo.get_wrapped_container().id, self.config.echo_port
            self.delay = SynAckDelay(
                self.client, self.images.delay, container_id, port, delay_ms, labels=self.labels, scope=scope
            ).start()
            self.delay_ms = delay_ms
            self.delay_target = target
            self.delay_scope = scope
            if self.delay.backend:
                self.delay_backends.add(self.delay.backend)
            return self.delay.backend
        return None

    # --- TLS (tls_testbed.py) ------------------------------------------------------------------
    @property
    def tls_echo_name(self) -> str:
        return f"csb-tlsecho-{self.run_id}"

    def ensure_tls(self) -> TlsTestbed:
        """Make the run's certificates, start the TLS echo backend, and restart the pool manager
        with a `tls` pool (once)."""
        if self.tls is not None:
            return self.tls
        from .tls_testbed import TlsTestbed, read_backend_sessions

        tls = TlsTestbed(self.run_id, self.tls_echo_name)
        try:
            self.tls_echo = self._start_container(
                self.images.echo,
                self.tls_echo_name,
                tls.backend_command(),
                volumes=tuple((str(src), dst, mode) for src, dst, mode in tls.backend_volumes()),
            )
            tls.backend_sessions_before = read_backend_sessions(self.tls_echo.get_wrapped_container())
        except BaseException:
            if self.tls_echo is not None:
                self.tls_echo.stop()
                self.tls_echo = None
            tls.close()
            raise
        self.tls = tls
        self._restart_pool_with_config()
        return tls

    def _delay_target(self, scenario: Scenario) -> str:
        return "tls" if scenario.transport == "tls" and scenario.backend == "echo" else scenario.backend

    def count_cold_starts(self, scenario: Scenario, records: list[dict[str, Any] | None]) -> None:
        """Called for every cold start of a round (warm-ups included), for the session accounting."""
        if scenario.transport == "tls" and scenario.backend == "echo" and self.tls is not None:
            self.tls.counts.count(scenario.mode, records)

    def _tally_tls_pool(self, stats: dict[str, Any] | None) -> None:
        from .tls_testbed import TLS_POOL

        assert self.tls is not None
        try:
            if stats is None:
                raise RuntimeError("the pool manager did not answer stats")
            pool = stats["pools"].get(TLS_POOL)
            if pool is not None:  # a manager started before the tls pool existed has none
                self.tls.tally.add(pool)
        except Exception as exc:  # the session check reports it; stopping goes on
            self.tls.tally.errors.append(f"cannot read the pool manager's tls counters before stopping it: {exc}")

    def _pool_stats(self) -> dict[str, Any]:
        stats = self.manager_stats()
        if stats is None:
            raise RuntimeError("the pool manager did not answer stats")
        return stats

    def check_tls_sessions(self) -> tuple[dict[str, Any], list[str]]:
        """One backend TLS session per TLS cold start (see tls_testbed)."""
        from .tls_testbed import check_sessions, read_backend_sessions, settled_pool_stats

        if self.tls is None or self.tls_echo is None:
            return {}, []
        container = self.tls_echo.get_wrapped_container()
        live: dict[str, Any] | None = None
        for _ in range(5):  # the manager may open a session between the two readings: read again
            live = settled_pool_stats(self._pool_stats) if self.pool is not None else None
            sessions = read_backend_sessions(container)
            again = settled_pool_stats(self._pool_stats) if self.pool is not None else None
            if (live or {}).get("refills") == (again or {}).get("refills"):
                break
        return check_sessions(self.tls, sessions, live)

    def prepare(self, scenario: Scenario) -> None:
        """Bring the testbed into the state a scenario needs."""
        if self.sessions is not None:
            self.sessions.close()  # its reading opens the next window unless a step below touches it
        if self.user is not None and self.user.handles(scenario.id):
            self.set_delay(0.0)
            self.user.prepare(scenario.id)
            self.start_pool()
            return
        if scenario.backend == "pg":
            self.ensure_pg()
            if scenario.transport == "tls":
                self.ensure_pg_tls()
        if scenario.proxy:
            self.ensure_pgbouncer()
        if scenario.transport == "tls" and scenario.backend == "echo":
            self.ensure_tls()
        if scenario.rtt_ms > 0:
            self.set_delay(scenario.rtt_ms, self._delay_target(scenario), scope="all")
        else:
            self.set_delay(scenario.delay_ms, self._delay_target(scenario))
        if scenario.pool_up:
            self.start_pool()
        else:
            self.stop_pool()
        if scenario.backend == "pg" and self.sessions is not None:
            self.sessions.open(scenario.id)

    # --- PgBouncer and the run's balances (measure/accounting.py) -----------------------------
    @property
    def pgbouncer_name(self) -> str:
        return f"csb-pgb-{self.run_id}"

    def ensure_pgbouncer(self) -> PgBouncerContainer:
        """PgBouncer in front of the database container, started once when a scenario needs it."""
        if self.pgbouncer is not None:
            return self.pgbouncer
        from .database import PostgresBackend
        from .pgbouncer import PgBouncerContainer

        if not isinstance(self.pg, PostgresBackend):
            raise TestbedError("PgBouncer runs next to the database container, not an external server")
        if self.sessions is not None:
            self.sessions.touch()  # its start-up check may open a server session
        self.pgbouncer = PgBouncerContainer(
            self.client, self.images.extra["pgbouncer"], self.pg, self.pgbouncer_name, self.labels
        ).start()
        return self.pgbouncer

    def manager_stats(self) -> dict[str, Any] | None:
        """The running pool manager's stats reply, or None (not running, not answering). Asked from
        inside its container: the socket lives in a volume on the engine's host, maybe remote."""
        if self.pool is None:
            return None
        try:
            code, out = self.pool.get_wrapped_container().exec_run(
                ["python3", "-c", STATS_SNIPPET, f"{SOCKET_MOUNT}/{SOCKET_NAME}"], demux=False
            )
            reply = json.loads(out) if code == 0 else None
        except (docker.errors.APIError, ValueError):
            return None
        return reply if isinstance(reply, dict) else None

    def _settle_pools(self) -> None:
        if self.pool is not None:
            wait_settled(self.manager_stats)

    def observe_cold_starts(self, scenario: Scenario, results: list[ColdStartResult]) -> None:
        self.handouts.count(r.record for r in results)
        if self.sessions is not None:
            self.sessions.count(scenario.id, len(results))

    def check_handouts(self) -> list[str]:
        return self.handouts.problems(self.manager_stats(), running=self.pool is not None)

    def close_session_window(self) -> None:
        """Close the arm's window before sessions of no arm (the harness's psql check, shutdown)."""
        if self.sessions is not None:
            self.sessions.close()
            self.sessions.touch()

    @property
    def pg_sessions_by_scenario(self) -> dict[str, dict[str, int]]:
        return dict(self.sessions.tallies) if self.sessions is not None else {}

    def function_spec(self, scenario: Scenario) -> FunctionSpec:
        if self.user is not None and self.user.handles(scenario.id):
            return self.user.function_spec(scenario.id)
        if scenario.backend == "pg":
            return self._pg_function_spec(scenario)
        target, pool = self.target, self.config.pool_name
        binds: dict[str, dict[str, str]] = {self.socket_volume: {"bind": SOCKET_MOUNT, "mode": "rw"}}
        tls_args: list[str] = []
        if scenario.transport == "tls":
            from .tls_testbed import TLS_POOL

            tls = self.ensure_tls()
            target, pool, tls_args = tls.target, TLS_POOL, tls.function_args()
            # The CA (public) verifies a handshake of the function's own: direct mode, or a fallback.
            ca_dir, ca_bind, ca_mode = tls.ca_volume()
            binds[str(ca_dir)] = {"bind": ca_bind, "mode": ca_mode}
        command = function_specs.echo_command(
            scenario,
            target=target,
            socket=f"{SOCKET_MOUNT}/{SOCKET_NAME}",
            pool=pool,
            payload_size=self.config.payload_size,
        )
        command += tls_args
        image = function_specs.image_key(scenario)
        if scenario.language == "python" and scenario.entrypoint == "in-process" and scenario.handoff == "relay":
            command += ["--handoff", "relay"]
        if self.config.requests != 1:  # every arm the same number of round trips, whatever its language
            command += ["--requests", str(self.config.requests)]
        if scenario.language in ("python", "c") and not self.config.prefetch:  # their own page-in
            command.append("--no-prefetch")
        return FunctionSpec(
            image=getattr(self.images, image, "") or self.images.extra[image],
            command=command,
            network="none" if scenario.network == "none" else self.network_name,
            binds=binds,
            labels={**self.labels, "coldstart-bench.role": "function"},
            runtime=scenario.runtime,
        )

    def _pg_function_spec(self, scenario: Scenario) -> FunctionSpec:
        assert self.pg is not None
        route = function_specs.pg_route(scenario, self.pg, self.pgbouncer)
        from .database import SECRET_CA_NAME, TLS_POOL_NAME

        tls = scenario.transport == "tls"
        command = [
            *function_specs.STAMP_ONLY,
            "python3", "-m", "components.pg_function",
            "--mode", scenario.mode,
            "--host", route.host, "--port", str(route.port),
            "--database", self.pg.database, "--user", self.pg.user,
            "--socket", f"{SOCKET_MOUNT}/{SOCKET_NAME}", "--pool", TLS_POOL_NAME if tls else "pg",
        ]  # fmt: skip
        if tls and scenario.mode == "direct":
            command += ["--tls-ca", f"{SECRET_MOUNT}/{SECRET_CA_NAME}", "--tls-server-name", self.pg_name]
        if scenario.handoff == "relay" and scenario.mode == "socket":
            command += ["--handoff", "relay"]
        binds = {self.socket_volume: {"bind": SOCKET_MOUNT, "mode": "rw"}, **route.binds}
        if scenario.mode == "direct":
            # Only a function that authenticates itself gets the credential.
            command += ["--password-file", f"{SECRET_MOUNT}/pgpassword"]
            binds[self.secret_volume] = {"bind": SECRET_MOUNT, "mode": "ro"}
        if not self.config.prefetch:
            command.append("--no-prefetch")
        return FunctionSpec(
            image=self.images.extra["pgfunction"],
            command=command,
            network="none" if scenario.network == "none" else self.network_name,
            binds=binds,
            labels={**self.labels, "coldstart-bench.role": "function"},
            runtime=scenario.runtime,
        )

    def close(self) -> None:
        errors: list[str] = []
        steps = (
            self.close_session_window,
            self._close_delay,
            self.stop_pool,
            self._close_user,
            self._close_pgbouncer,
            self._close_pg,
            self._close_tls,
            self._close_echo,
            self._close_network,
        )
        for step in steps:
            try:
                step()
            except Exception as exc:
                errors.append(f"{step.__name__}: {exc}")
        sweep(self.client, self.run_id)
        if errors:
            raise TestbedError("cleanup incomplete: " + "; ".join(errors))

    def _close_delay(self) -> None:
        if self.delay is not None:
            self.delay.stop()
            self.delay = None

    def _close_pgbouncer(self) -> None:
        if self.pgbouncer is not None:
            self.pgbouncer.stop()
            self.pgbouncer = None

    def _close_user(self) -> None:
        if self.user is not None:
            self.user.close()

    def _close_pg(self) -> None:
        from .database import PostgresBackend

        if isinstance(self.pg, PostgresBackend):
            self.pg.stop()
        self.pg = None

    def _close_tls(self) -> None:
        if self.tls_echo is not None:
            self.tls_echo.stop()
            self.tls_echo = None
        if self.tls is not None:
            self.tls.close()  # the run's CA, server certificate and key
            self.tls = None

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
    """Remove containers, networks and volumes of one run (or of every run whose process is gone)."""
    removed: list[str] = []
    label = f"{LABEL_RUN}={run_id}" if run_id else LABEL
    # ignore_removed: on a shared engine a listed container may be gone before it is inspected.
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
    # Volumes last: the engine refuses to remove one a container still uses.
    for volume in client.volumes.list(filters={"label": label}):
        if run_id is None and _owner_alive(volume.attrs.get("Labels") or {}):
            continue
        try:
            remove_volume(client, volume.name)
        except docker.errors.APIError:
            continue  # still in use by a container being removed; the next sweep takes it
        removed.append(volume.name)
    return removed


def _owner_alive(labels: dict[str, str]) -> bool:
    """Whether the process that created a resource still runs; without a pid label, or when
    another host created it, we cannot tell, so the resource is left alone."""
    host = labels.get(LABEL_HOST)
    if host is not None and host != socket.gethostname():
        return True
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
