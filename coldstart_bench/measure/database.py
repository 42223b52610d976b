"""Host side of the OLTP scenarios: the PostgreSQL backend and its correctness checks.

``PostgresBackend`` starts the ``images/postgres`` image (testcontainers, Ryuk off) on the run's
docker network; ``ExternalPostgres`` is your own server (--bench-pg-target). The tests' throwaway
cluster (tests/support/pg_cluster.py) shares the admin helpers. All answer them through ``psql``
as the superuser over the server's Unix socket, so checking the database never needs a network
path to it nor a driver on the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from .lifecycle import StartStop

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "images" / "postgres" / "schema.sql"

DB_USER = "bench"
DB_NAME = "bench"
# Must match ARG BENCH_PASSWORD in images/postgres/Dockerfile (a benchmark-only credential).
DEFAULT_PASSWORD = "bench-scram-pw"
PG_PORT = 5432
# Must match images/postgres/schema.sql.
ACCOUNTS = 100
INITIAL_BALANCE = 100_000
READY_LINE = "database system is ready to accept connections"
# Where the server's TLS certificate and key are mounted (images/postgres/start.sh turns ssl on).
CONTAINER_TLS_DIR = "/run/pg-tls"
TLS_POOL_NAME = "pgtls"
SECRET_CA_NAME = "pg-ca.pem"  # the CA beside the password in the secret volume (manager, direct functions)
CONTAINER_SOCKET_DIR = "/var/run/postgresql"
POOL_NAME = "pg"

# One row: transfers, accounts, total balance, accounts whose balance disagrees with the history.
_BALANCE_SQL = f"""
SELECT (SELECT count(*) FROM history),
       (SELECT count(*) FROM accounts),
       (SELECT coalesce(sum(balance), 0) FROM accounts),
       (SELECT count(*) FROM accounts a
         WHERE a.balance <> {INITIAL_BALANCE}
               - coalesce((SELECT sum(amount) FROM history h WHERE h.from_id = a.id), 0)
               + coalesce((SELECT sum(amount) FROM history h WHERE h.to_id = a.id), 0))
"""


class PgBackendError(RuntimeError):
    """The database could not be started or queried; the message says why."""


class _Admin:
    """Admin helpers shared by the container and the local cluster (``psql`` as superuser)."""

    user = DB_USER
    database = DB_NAME
    password = DEFAULT_PASSWORD

    def psql(self, sql: str, database: str | None = None, timeout: float = 30.0) -> str:
        raise NotImplementedError

    def rows(self, sql: str, database: str | None = None) -> list[list[str]]:
        out = self.psql(sql, database)
        return [line.split("|") for line in out.splitlines() if line]

    def check_balances(self) -> tuple[int, bool]:
        """(committed transfers, the money adds up): total unchanged and every account's balance
        equals its initial balance minus what it sent plus what it received per the history."""
        row = self.rows(_BALANCE_SQL)[0]
        n_transfers, n_accounts, total, mismatched = (int(v) for v in row)
        ok = n_accounts == ACCOUNTS and total == ACCOUNTS * INITIAL_BALANCE and mismatched == 0
        return n_transfers, ok

    def reset_transfers(self) -> None:
        """Back to the initial state: no history, every account at its initial balance."""
        self.psql(f"BEGIN; TRUNCATE history; UPDATE accounts SET balance = {INITIAL_BALANCE}; COMMIT;")

    def backend_pids(self, role: str | None = None, application_name: str | None = None) -> list[int]:
        where = [f"usename = '{role or self.user}'", "backend_type = 'client backend'"]
        if application_name is not None:
            where.append(f"application_name = '{application_name}'")
        out = self.rows(f"SELECT pid FROM pg_stat_activity WHERE {' AND '.join(where)} ORDER BY pid")
        return [int(r[0]) for r in out]

    def terminate_backends(self, role: str | None = None, application_name: str | None = None) -> int:
        """pg_terminate_backend every session of ``role`` (default: the benchmark role); returns
        how many were signalled. Pooled sessions then receive FATAL 57P01 and EOF."""
        where = [f"usename = '{role or self.user}'", "pid <> pg_backend_pid()"]
        if application_name is not None:
            where.append(f"application_name = '{application_name}'")
        out = self.psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {' AND '.join(where)}")
        return int(out.strip() or 0)

    def write_password_file(self, directory: str | Path) -> Path:
        """The password in a file (mode 0644: containers may run as another uid) for a mount."""
        path = Path(directory) / "pgpassword"
        path.write_text(self.password + "\n")
        path.chmod(0o644)
        return path

    def pool_config(
        self, target: str, password_file: str, size: int = 16, name: str = POOL_NAME, **extra: Any
    ) -> dict[str, Any]:
        """The ``pools`` entry of the manager's JSON config for this database."""
        spec: dict[str, Any] = {
            "kind": "postgres",
            "target": target,
            "size": size,
            "user": self.user,
            "database": self.database,
            "password_file": password_file,
        }
        spec.update(extra)
        return {name: spec}


def _psql_flags(sql: str, database: str) -> list[str]:
    return ["-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql]


class PostgresBackend(_Admin, StartStop):
    """The ``images/postgres`` container on a docker network, as a context manager.

    Functions and the pool manager reach it as ``name:5432`` on ``network_name``; the host reaches
    it on ``127.0.0.1:host_port`` (published on loopback only).
    """

    def __init__(
        self,
        client: Any | None,
        image: str,
        network_name: str,
        name: str,
        labels: dict[str, str] | None = None,
        *,
        postgres_args: tuple[str, ...] = (),
        start_timeout: float = 60.0,
        publish: bool = True,
        tls_volume: str | None = None,
        **container_kwargs: Any,
    ) -> None:
        self._client = client
        self.image = image
        self.network_name = network_name
        self.name = name
        self.labels = dict(labels or {})
        self.postgres_args = postgres_args
        self.start_timeout = start_timeout
        self.publish = publish
        self.container_kwargs = container_kwargs
        # A volume with server.pem + server.key for this container's name: the server speaks TLS
        # 1.3 too (ssl = on; pg_hba's hostssl lines take SCRAM over TLS).
        self.tls_volume = tls_volume
        self._container: Any = None  # testcontainers DockerContainer

    # --- addresses -------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.name

    @property
    def port(self) -> int:
        return PG_PORT

    @property
    def target(self) -> str:
        return f"{self.name}:{PG_PORT}"

    @property
    def host_port(self) -> int:
        if not self.publish or self._container is None:
            raise PgBackendError("the database port is not published")
        return int(self._container.get_exposed_port(PG_PORT))

    @property
    def container(self) -> Any:
        """The docker SDK container object."""
        if self._container is None:
            raise PgBackendError("database container not started")
        return self._container.get_wrapped_container()

    @property
    def container_id(self) -> str:
        return str(self.container.id)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> PostgresBackend:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        kwargs: dict[str, Any] = {"labels": self.labels, "network": self.network_name, **self.container_kwargs}
        container = (
            DockerContainer(self.image)
            .with_name(self.name)
            .with_kwargs(**kwargs)
            .waiting_for(LogMessageWaitStrategy(READY_LINE).with_startup_timeout(int(self.start_timeout)))
        )
        if self.publish:
            # Loopback only, random port: the host needs it for ad-hoc access, nobody else.
            container.ports[f"{PG_PORT}/tcp"] = ("127.0.0.1", None)  # type: ignore[assignment]
        if self.postgres_args:
            container = container.with_command(list(self.postgres_args))
        if self.tls_volume is not None:
            container = container.with_volume_mapping(self.tls_volume, CONTAINER_TLS_DIR, "ro").with_env(
                "PG_TLS_DIR", CONTAINER_TLS_DIR
            )
        try:
            self._container = container.start()
        except Exception as exc:
            wrapped = container._container
            logs = _tail(wrapped)
            with contextlib.suppress(Exception):
                if wrapped is not None:
                    wrapped.remove(force=True)
            self._container = None
            raise PgBackendError(f"{self.name} ({self.image}) did not become ready: {exc}\n{logs}") from exc
        # The log line appears as the postmaster accepts; prove a query works before returning.
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self.psql("SELECT 1")
                break
            except PgBackendError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.stop()  # force-removes the container and closes its client
            self._container = None

    # --- admin -----------------------------------------------------------------------------
    def psql(self, sql: str, database: str | None = None, timeout: float = 30.0) -> str:
        argv = ["psql", "-h", CONTAINER_SOCKET_DIR, "-U", "postgres", *_psql_flags(sql, database or self.database)]
        code, output = self.container.exec_run(argv, user="postgres", demux=True)
        stdout, stderr = output if isinstance(output, tuple) else (output, b"")
        if code != 0:
            raise PgBackendError(f"psql in {self.name} failed ({code}): {(stderr or stdout or b'').decode().strip()}")
        return (stdout or b"").decode()


def _tail(container: Any, lines: int = 20) -> str:
    if container is None:
        return "(container not created)"
    try:
        raw = container.logs(tail=lines)
        return raw.decode("utf-8", "replace").strip() if isinstance(raw, bytes) else str(raw)
    except Exception:
        return "(no logs)"


# --- a server you run yourself ------------------------------------------------------------------


class ExternalPostgres(_Admin):
    """A PostgreSQL the harness does not start (yours). The admin helpers run over a session of
    the benchmark role itself, so neither superuser rights nor psql are needed: the role owns
    the schema and may terminate its own sessions. TLS must be off for this role's connections
    from the pool manager (an injected fd cannot carry TLS state)."""

    def __init__(
        self,
        host: str,
        port: int = PG_PORT,
        user: str = DB_USER,
        database: str = DB_NAME,
        password: str | None = None,
        password_file: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.database = database
        if password is None and password_file:
            password = Path(password_file).read_text().rstrip("\r\n")
        self.password = password or ""

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def psql(self, sql: str, database: str | None = None, timeout: float = 30.0) -> str:
        """Rows of every statement, ``|``-separated like ``psql -A -t``."""
        from components import pg_pool, pg_wire

        config = {
            "target": self.target,
            "user": self.user,
            "password": self.password,
            "database": database or self.database,
            "application_name": "coldstart-admin",
            "connect_timeout": timeout,
        }
        try:
            sock, meta = pg_pool.open_session(config)
        except pg_pool.PgSessionError as exc:
            raise PgBackendError(str(exc)) from None
        session = pg_wire.Session.adopt(sock, meta)
        session.settimeout(timeout)
        try:
            results = session.simple_query(sql)
        except pg_wire.PgWireError as exc:
            raise PgBackendError(f"{self.target}: {exc}") from None
        finally:
            session.close()
        lines = ["|".join("" if v is None else v for v in row) for r in results for row in r.rows]
        return "\n".join(lines) + ("\n" if lines else "")

    def load_schema(self) -> bool:
        """Create the benchmark tables unless they exist; True if it created them."""
        if self.psql("SELECT to_regclass('accounts') IS NOT NULL").strip() == "t":
            return False
        self.psql(SCHEMA_PATH.read_text())
        return True


def manager_config(socket_path: str, pools: dict[str, Any]) -> str:
    """A whole manager JSON config (for ``--config``)."""
    return json.dumps({"socket": socket_path, "pools": pools}, indent=2)
