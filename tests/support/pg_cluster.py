"""A throwaway PostgreSQL cluster from the host's binaries, for tests (and a quick way to try the
functions without Docker). Shares the admin helpers of the benchmark's database backends."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from coldstart_bench.measure.database import DEFAULT_PASSWORD, SCHEMA_PATH, PgBackendError, _Admin, _psql_flags
from coldstart_bench.measure.lifecycle import StartStop, run_temp_dir


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


class LocalCluster(_Admin, StartStop):
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
        self.base = run_temp_dir("csb-pg-")
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
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists():
            with contextlib.suppress(Exception):
                self._cmd([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"])
        if pidfile.exists():
            # pg_ctl could not stop it: the postmaster goes by its pid (its children follow it).
            with contextlib.suppress(OSError, ValueError, IndexError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

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
