"""Host side of the OLTP scenarios: the PostgreSQL backend and its correctness checks.

``PostgresBackend`` starts the ``images/postgres`` image (testcontainers, Ryuk off) on the run's
docker network; ``LocalCluster`` runs a throwaway cluster from the host's PostgreSQL binaries
(tests, and a quick way to try the functions without Docker). Both answer the same admin
helpers through ``psql`` as the superuser over the server's Unix socket, so checking the
database never needs a network path to it nor a driver on the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

REPO_ROOT = Path(__file__).resolve().parent.parent
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


class PostgresBackend(_Admin):
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

    def __enter__(self) -> PostgresBackend:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

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


# --- a throwaway cluster from the host's binaries ----------------------------------------------


def find_pg_bindir() -> Path | None:
    """Directory with initdb/pg_ctl/postgres: $PG_BINDIR, else the newest Debian install, else PATH."""
    env = os.environ.get("PG_BINDIR")
    if env and (Path(env) / "initdb").exists():
        return Path(env)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for cand in reversed(debian):
        if (cand / "initdb").exists():
            return cand
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster(_Admin):
    """initdb + pg_ctl under a temp directory, on 127.0.0.1 with scram-sha-256 for the benchmark
    role and trust only on its private Unix socket. Run as the ``postgres`` user when root."""

    def __init__(
        self,
        password: str = DEFAULT_PASSWORD,
        port: int | None = None,
        bindir: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.password = password
        self.port = port or free_port()
        self.host = "127.0.0.1"
        found = bindir or find_pg_bindir()
        if found is None:
            raise PgBackendError("PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BINDIR)")
        self.bindir: Path = found
        self.settings = {"fsync": "off", "max_connections": "200", **(settings or {})}
        self.base: Path | None = None
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def datadir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def sockdir(self) -> Path:
        assert self.base is not None
        return self.base / "sock"

    def _cmd(self, argv: list[str], timeout: float = 60.0, stdin: str | None = None) -> str:
        program = Path(argv[0]).name
        if self._run_as:
            argv = ["runuser", "-u", self._run_as, "--", *argv]
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise PgBackendError(f"{program} failed: {' '.join(argv)}\n{(proc.stderr or proc.stdout).strip()}")
        return proc.stdout

    def start(self) -> LocalCluster:
        self.base = Path(tempfile.mkdtemp(prefix="csb-pg-", dir="/tmp"))
        self.sockdir.mkdir()
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            for p in (self.base, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.base.chmod(0o755)
        self._cmd([
            str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres", "--encoding=UTF8",
            "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        ])  # fmt: skip
        opts = " ".join(
            [f"-c listen_addresses={self.host}", f"-p {self.port}", f"-k {self.sockdir}"]
            + [f"-c {k}={v}" for k, v in self.settings.items()]
        )
        self._cmd([
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.base / "server.log"),
            "-o", opts, "-w", "-t", "60", "start",
        ])  # fmt: skip
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'", database="postgres")
        self.psql(f"CREATE DATABASE {self.database} OWNER {self.user}", database="postgres")
        self._cmd(
            ["psql", "-h", str(self.sockdir), "-p", str(self.port), "-U", "postgres", "-X", "-q",
             "-v", "ON_ERROR_STOP=1", "-d", self.database],
            stdin=f"SET ROLE {self.user};\n" + SCHEMA_PATH.read_text(),
        )  # fmt: skip
        return self

    def psql(self, sql: str, database: str | None = None, timeout: float = 30.0) -> str:
        return self._cmd(
            ["psql", "-h", str(self.sockdir), "-p", str(self.port), "-U", "postgres",
             *_psql_flags(sql, database or self.database)],
            timeout=timeout,
        )  # fmt: skip

    def stop(self) -> None:
        if self.base is None:
            return
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self._cmd([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def session_config(self, **extra: Any) -> dict[str, Any]:
        """A postgres pool config (what the manager passes to ``open_session``)."""
        cfg: dict[str, Any] = {
            "kind": "postgres",
            "target": self.target,
            "user": self.user,
            "database": self.database,
            "password": self.password,
        }
        cfg.update(extra)
        return cfg


def manager_config(socket_path: str, pools: dict[str, Any]) -> str:
    """A whole manager JSON config (for ``--config``)."""
    return json.dumps({"socket": socket_path, "pools": pools}, indent=2)


def start_local_cluster(**kwargs: Any) -> tuple[LocalCluster | None, str]:
    """(running cluster, "") or (None, why not) — for test fixtures that skip with the reason."""
    if find_pg_bindir() is None:
        return None, "PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BINDIR)"
    if shutil.which("psql") is None:
        return None, "psql not found (apt-get install postgresql-client)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root but there is no 'postgres' user to run the server as"
    cluster = LocalCluster(**kwargs)
    try:
        cluster.start()
    except (PgBackendError, OSError, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        return None, f"could not start a throwaway PostgreSQL cluster: {exc}"
    return cluster, ""
