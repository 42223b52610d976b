"""PgBouncer in front of the benchmark's PostgreSQL: the proxy users pick instead of injection.

SCRAM-SHA-256 on both sides. The client side authenticates against the role's SCRAM verifier,
read from the server (``pg_authid``) into PgBouncer's ``auth_file``, so no password is stored;
PgBouncer then logs into PostgreSQL with the client's SCRAM keys (it can, because its verifier
is the server's own). ``pool_mode = transaction``. PgBouncer listens on TCP (``PGBOUNCER_PORT``)
and on a Unix socket ``.s.PGSQL.<port>`` in a directory that can be bind-mounted into function
containers (the ``pg-pgbouncer-unix`` arm: no network at all in the function).

``PgBouncerContainer`` runs the ``images/pgbouncer`` image next to a ``PostgresBackend`` on its
docker network; ``LocalPgBouncer`` runs the host's ``pgbouncer`` in front of a ``LocalCluster``
(tests). Both count what the proxy costs the database: ``server_connections()`` (SHOW SERVERS
on the admin console) and ``sessions_opened()`` (PostgreSQL's own pg_stat_database.sessions).
The admin console password is random per instance and only ever passed in the environment of
``psql``, never logged.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from .lifecycle import StartStop, run_temp_dir, stop_group

PGBOUNCER_PORT = 6432
ADMIN_USER = "pgbouncer"
CONTAINER_CONFIG_DIR = "/etc/pgbouncer/bench"
CONTAINER_SOCKET_DIR = "/run/pgbouncer"
DEFAULT_POOL_SIZE = 20
READY_TIMEOUT_S = 30.0


class PgBouncerError(RuntimeError):
    """PgBouncer could not be configured, started or queried; the message says why."""


class _Database(Protocol):
    user: str
    database: str

    def psql(self, sql: str, database: str | None = None, timeout: float = 30.0) -> str: ...


def scram_verifier(db: _Database, role: str | None = None) -> str:
    """The role's stored SCRAM-SHA-256 verifier (superuser query); refuses anything else."""
    name = role or db.user
    if not name.replace("_", "").isalnum():
        raise PgBouncerError(f"unexpected role name {name!r}")
    value = db.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{name}'", database="postgres").strip()
    if not value.startswith("SCRAM-SHA-256$"):
        raise PgBouncerError(f"role {name!r} has no SCRAM-SHA-256 verifier (password_encryption must be scram-sha-256)")
    return value


def userlist(entries: dict[str, str]) -> str:
    """auth_file text: one ``"user" "secret"`` line each (a SCRAM verifier or a password)."""
    lines = []
    for user, secret in entries.items():
        if '"' in user or '"' in secret:
            raise PgBouncerError("user names and secrets in the auth_file cannot contain double quotes")
        lines.append(f'"{user}" "{secret}"')
    return "\n".join(lines) + "\n"


def pgbouncer_ini(
    *,
    db_host: str,
    db_port: int,
    database: str,
    auth_file: str,
    socket_dir: str,
    listen_addr: str = "0.0.0.0",
    port: int = PGBOUNCER_PORT,
    pool_size: int = DEFAULT_POOL_SIZE,
    pool_mode: str = "transaction",
    pidfile: str = "",
    logfile: str = "",
) -> str:
    """pgbouncer.ini for one database, SCRAM for clients, the verifier's keys towards the server."""
    if pool_mode not in ("session", "transaction", "statement"):
        raise PgBouncerError(f"pool_mode must be session, transaction or statement, got {pool_mode!r}")
    settings = {
        "listen_addr": listen_addr,
        "listen_port": str(port),
        "unix_socket_dir": socket_dir,
        # Function containers may run as another uid than PgBouncer.
        "unix_socket_mode": "0777",
        "auth_type": "scram-sha-256",
        "auth_file": auth_file,
        "admin_users": ADMIN_USER,
        "pool_mode": pool_mode,
        "default_pool_size": str(pool_size),
        "min_pool_size": "0",
        "max_client_conn": "2000",
        "max_db_connections": str(pool_size),
        "server_login_retry": "1",
        "ignore_startup_parameters": "extra_float_digits",
        "log_connections": "0",
        "log_disconnections": "0",
        "log_pooler_errors": "1",
        "server_tls_sslmode": "disable",
        "client_tls_sslmode": "disable",
        "pidfile": pidfile,
        "logfile": logfile,
    }
    lines = ["[databases]", f"{database} = host={db_host} port={db_port} dbname={database}", "", "[pgbouncer]"]
    lines += [f"{k} = {v}" for k, v in settings.items() if v != ""]
    return "\n".join(lines) + "\n"


def _show_servers_count(output: str, database: str) -> int:
    """Rows of SHOW SERVERS (psql -A -t -F '|': type|user|database|state|...) for database."""
    return sum(1 for line in output.splitlines() if line.count("|") >= 3 and line.split("|")[2] == database)


def sessions_opened(db: _Database) -> int:
    """Sessions PostgreSQL has established to the benchmark database since its stats reset
    (pg_stat_database.sessions, PG >= 14). Its difference across an arm is the server
    connections that arm cost the database, for any arm (direct, pooled, proxied). Asked from the
    ``postgres`` database, so the harness's own psql sessions are not counted."""
    if not db.database.replace("_", "").isalnum():
        raise PgBouncerError(f"unexpected database name {db.database!r}")
    out = db.psql(f"SELECT sessions FROM pg_stat_database WHERE datname = '{db.database}'", database="postgres")
    return int(out.strip() or 0)


class _Counters:
    """What the proxy costs the database, shared by the container and the local process."""

    database: str
    db: Any  # a PostgresBackend or LocalCluster (see _Database)

    def admin(self, command: str) -> str:
        raise NotImplementedError

    def server_connections(self) -> int:
        """Server connections PgBouncer holds to the database now (SHOW SERVERS)."""
        return _show_servers_count(self.admin("SHOW SERVERS"), self.database)

    def sessions_opened(self) -> int:
        """See ``sessions_opened(db)``."""
        return sessions_opened(self.db)


class LocalPgBouncer(_Counters, StartStop):
    """The host's ``pgbouncer`` in front of a local cluster (``tests.support.pg_cluster.LocalCluster``)."""

    def __init__(self, db: Any, pool_size: int = DEFAULT_POOL_SIZE, port: int | None = None) -> None:
        self.db = db
        self.database = db.database
        self.pool_size = pool_size
        self.port = port or _free_port()
        self.base: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._admin_password = secrets.token_urlsafe(18)
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def socket_dir(self) -> Path:
        assert self.base is not None
        return self.base / "sock"

    def start(self) -> LocalPgBouncer:
        exe = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
        if exe is None:
            raise PgBouncerError("pgbouncer not found (apt-get install pgbouncer)")
        self.base = run_temp_dir("csb-pgb-")
        self.socket_dir.mkdir()
        auth = self.base / "userlist.txt"
        auth.write_text(userlist({self.db.user: scram_verifier(self.db), ADMIN_USER: self._admin_password}))
        auth.chmod(0o600)
        ini = self.base / "pgbouncer.ini"
        host, _, port = self.db.target.rpartition(":")
        ini.write_text(
            pgbouncer_ini(
                db_host=host, db_port=int(port), database=self.database, auth_file=str(auth),
                socket_dir=str(self.socket_dir), listen_addr="127.0.0.1", port=self.port, pool_size=self.pool_size,
            )
        )  # fmt: skip
        if self._run_as:
            import pwd

            pw = pwd.getpwnam(self._run_as)
            for p in (self.base, self.socket_dir, auth, ini):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        argv = [exe, str(ini)]
        # The user switch happens in the child itself (not through runuser, whose child outlives a
        # signal to runuser), in a session of its own: the pid is pgbouncer's and the group all of it.
        user: dict[str, Any] = {}
        if self._run_as:
            user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self._log = open(self.base / "pgbouncer.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, **user)
        deadline = time.monotonic() + READY_TIMEOUT_S
        sock = self.socket_dir / f".s.PGSQL.{self.port}"
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.base / "pgbouncer.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise PgBouncerError(f"pgbouncer did not start: {log}")
            time.sleep(0.05)
        return self

    def admin(self, command: str) -> str:
        env = {**os.environ, "PGPASSWORD": self._admin_password}
        argv = ["psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U", ADMIN_USER, "-X", "-A", "-t"]
        argv += ["-F", "|", "-d", "pgbouncer", "-c", command]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, check=False)
        if proc.returncode != 0:
            raise PgBouncerError(f"pgbouncer admin {command!r} failed: {proc.stderr.strip()}")
        return proc.stdout

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, signal.SIGINT)  # SIGINT: pgbouncer's safe shutdown
            self.proc = None
            self._log.close()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None


class PgBouncerContainer(_Counters, StartStop):
    """The ``images/pgbouncer`` container next to a ``PostgresBackend``, as a context manager.

    Functions reach it as ``name:6432`` on the database's network (``target``), or with no
    network through the Unix socket directory ``socket_dir`` on the host, to bind-mount at
    ``CONTAINER_SOCKET_DIR`` in the function (``pg_function --host /run/pgbouncer --port 6432``).
    """

    def __init__(
        self,
        client: Any,
        image: str,
        db: Any,
        name: str,
        labels: dict[str, str] | None = None,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        pool_mode: str = "transaction",
    ) -> None:
        self.client = client
        self.image = image
        self.db = db
        self.database = db.database
        self.name = name
        self.labels = dict(labels or {})
        self.pool_size = pool_size
        self.pool_mode = pool_mode
        self.container: Any = None
        self.base: Path | None = None
        self._admin_password = secrets.token_urlsafe(18)

    @property
    def target(self) -> str:
        return f"{self.name}:{PGBOUNCER_PORT}"

    @property
    def socket_dir(self) -> Path:
        """Host directory holding ``.s.PGSQL.6432``; mount it at ``CONTAINER_SOCKET_DIR``."""
        if self.base is None:
            raise PgBouncerError("pgbouncer not started")
        return self.base / "sock"

    @property
    def socket_mount(self) -> dict[str, dict[str, str]]:
        """The docker SDK ``volumes`` entry a function container needs for the Unix socket arm."""
        return {str(self.socket_dir): {"bind": CONTAINER_SOCKET_DIR, "mode": "rw"}}

    def start(self) -> PgBouncerContainer:
        self.base = Path(tempfile.mkdtemp(prefix="csb-pgb-", dir="/tmp"))
        config = self.base / "config"
        config.mkdir()
        self.socket_dir.mkdir()
        # PgBouncer runs as the image's postgres user: it must read the config and create the socket.
        self.base.chmod(0o755)
        config.chmod(0o755)
        self.socket_dir.chmod(0o777)
        auth = config / "userlist.txt"
        auth.write_text(userlist({self.db.user: scram_verifier(self.db), ADMIN_USER: self._admin_password}))
        auth.chmod(0o644)
        (config / "pgbouncer.ini").write_text(
            pgbouncer_ini(
                db_host=self.db.host, db_port=self.db.port, database=self.database,
                auth_file=f"{CONTAINER_CONFIG_DIR}/userlist.txt", socket_dir=CONTAINER_SOCKET_DIR,
                pool_size=self.pool_size, pool_mode=self.pool_mode,
            )
        )  # fmt: skip
        (config / "pgbouncer.ini").chmod(0o644)
        try:
            self.container = self.client.containers.run(
                self.image,
                name=self.name,
                detach=True,
                network=self.db.network_name,
                labels=self.labels,
                volumes={
                    str(config): {"bind": CONTAINER_CONFIG_DIR, "mode": "ro"},
                    str(self.socket_dir): {"bind": CONTAINER_SOCKET_DIR, "mode": "rw"},
                },
            )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        sock = self.socket_dir / f".s.PGSQL.{PGBOUNCER_PORT}"
        while True:
            self.container.reload()
            if self.container.status not in ("created", "running"):
                raise PgBouncerError(f"pgbouncer exited: {self._logs()}")
            if sock.exists():
                with contextlib.suppress(PgBouncerError):
                    self.admin("SHOW VERSION")
                    return
            if time.monotonic() > deadline:
                raise PgBouncerError(f"pgbouncer not ready within {READY_TIMEOUT_S:.0f} s: {self._logs()}")
            time.sleep(0.1)

    def _logs(self) -> str:
        try:
            return self.container.logs(tail=20).decode("utf-8", "replace").strip()
        except Exception:
            return "(no logs)"

    def admin(self, command: str) -> str:
        if self.container is None:
            raise PgBouncerError("pgbouncer not started")
        argv = ["psql", "-h", CONTAINER_SOCKET_DIR, "-p", str(PGBOUNCER_PORT), "-U", ADMIN_USER, "-X", "-A", "-t"]
        argv += ["-F", "|", "-d", "pgbouncer", "-c", command]
        code, output = self.container.exec_run(argv, environment={"PGPASSWORD": self._admin_password}, demux=True)
        stdout, stderr = output if isinstance(output, tuple) else (output, b"")
        if code != 0:
            raise PgBouncerError(f"pgbouncer admin {command!r} failed ({code}): {(stderr or b'').decode().strip()}")
        return (stdout or b"").decode()

    def stop(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.remove(force=True)
            self.container = None
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
