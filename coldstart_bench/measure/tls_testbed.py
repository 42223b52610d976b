"""The TLS part of a run's testbed: a throw-away CA and server certificate, a TLS echo backend,
the pool manager's `tls` pool, and the check that the backend saw exactly one TLS session per
TLS cold start.

Certificates are made per run (`tls_certs.make_run_certificates`) into a private 0700 directory
that only the TLS echo container mounts (it holds the server key); the CA certificate alone is
copied into a public directory that the pool manager and direct-mode functions mount. Both go
when the testbed closes. Nothing here ever logs, stores or returns a key.

Session accounting: every TLS session the backend accepts was opened either by a direct-mode
cold start (its own handshake) or by the pool manager (a pooled session, handed to one
socket-mode cold start, or still idle / discarded unused). So, at any settled moment,

    backend sessions == direct handshakes + sessions the manager opened (all its lifetimes)
    sessions the manager handed out == socket-mode cold starts that received one

The manager's counters restart with the manager, so they are collected before each stop.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tls_certs import make_run_certificates

TLS_PORT = 7443
TLS_POOL = "tls"
# Where the containers see the files.
SERVER_MOUNT = "/run/tls-server"  # server.pem + server.key: the TLS echo container only
CA_MOUNT = "/run/cpm-tls"  # ca.pem: the pool manager and direct-mode functions
CA_FILE = f"{CA_MOUNT}/ca.pem"


class TlsAccountingError(RuntimeError):
    """The backend's or the manager's counters could not be read."""


@dataclass
class PoolTally:
    """The tls pool's counters, summed over the manager's lifetimes."""

    opened: int = 0  # sessions the manager handshook ("refills")
    handed_out: int = 0
    discarded: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, pool_stats: dict[str, Any]) -> None:
        self.opened += int(pool_stats.get("refills", 0))
        self.handed_out += int(pool_stats.get("handed_out", 0))
        self.discarded += int(pool_stats.get("discards", 0))


@dataclass
class TlsCounts:
    """What the TLS cold starts did (warm-ups included), counted as each one ends."""

    direct_handshakes: int = 0  # a function completed its own handshake with the backend
    socket_received: int = 0  # a function received a session from the manager
    cold_starts: int = 0

    def count(self, mode: str, records: Sequence[dict[str, Any] | None]) -> None:
        for record in records:
            self.cold_starts += 1
            if not record:
                continue
            if isinstance(record.get("tls_handshake_us"), (int, float)):
                self.direct_handshakes += 1
            if mode == "socket" and record.get("pool_id") is not None:
                self.socket_received += 1


@dataclass
class TlsTestbed:
    """Certificates and names of the TLS backend; the containers are started by the testbed."""

    run_id: str
    backend_name: str
    private_dir: Path = field(init=False)
    public_dir: Path = field(init=False)
    tally: PoolTally = field(default_factory=PoolTally)
    counts: TlsCounts = field(default_factory=TlsCounts)
    backend_sessions_before: int = 0

    def __post_init__(self) -> None:
        tag = self.run_id[-8:]
        self.private_dir = Path(tempfile.mkdtemp(prefix=f"csb-{tag}-tls-key-", dir="/tmp"))  # 0700
        self.public_dir = Path(tempfile.mkdtemp(prefix=f"csb-{tag}-tls-ca-", dir="/tmp"))
        self.public_dir.chmod(0o755)
        certs = make_run_certificates(self.private_dir, (self.backend_name, "localhost", "127.0.0.1"))
        # The manager authenticates with no client certificate here: the client key goes at once.
        certs.client_key.unlink()
        certs.client_cert.unlink()
        shutil.copyfile(certs.ca_cert, self.public_dir / "ca.pem")
        (self.public_dir / "ca.pem").chmod(0o644)

    @property
    def target(self) -> str:
        return f"{self.backend_name}:{TLS_PORT}"

    def backend_command(self) -> list[str]:
        return [
            "python3", "-m", "components.echo_server",
            "--host", "0.0.0.0", "--port", str(TLS_PORT),
            "--tls-cert", f"{SERVER_MOUNT}/server.pem", "--tls-key", f"{SERVER_MOUNT}/server.key",
        ]  # fmt: skip

    def backend_volumes(self) -> tuple[tuple[Path, str, str], ...]:
        return ((self.private_dir, SERVER_MOUNT, "ro"),)

    def ca_volume(self) -> tuple[Path, str, str]:
        return (self.public_dir, CA_MOUNT, "ro")

    def pool_entry(self, size: int) -> dict[str, Any]:
        return {
            "kind": "tls",
            "target": self.target,
            "ca_file": CA_FILE,
            "server_name": self.backend_name,
            "size": size,
            "ktls": "auto",
        }

    def function_args(self) -> list[str]:
        return ["--transport", "tls", "--tls-ca", CA_FILE, "--tls-server-name", self.backend_name]

    def close(self) -> None:
        shutil.rmtree(self.private_dir, ignore_errors=True)
        shutil.rmtree(self.public_dir, ignore_errors=True)


def read_backend_sessions(container: Any, timeout: float = 10.0) -> int:
    """The TLS echo server's accepted-session counter: SIGUSR1 makes it print a stats line."""

    def stats_lines() -> list[str]:
        raw = container.logs(stdout=True, stderr=False)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return [ln for ln in text.splitlines() if '"event": "stats"' in ln]

    seen = len(stats_lines())
    container.kill(signal="SIGUSR1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = stats_lines()
        if len(lines) > seen:
            return int(json.loads(lines[-1])["tls_sessions"])
        time.sleep(0.05)
    raise TlsAccountingError(f"the TLS backend printed no stats line within {timeout:.0f}s of SIGUSR1")


def settled_pool_stats(read_stats: Callable[[], dict[str, Any]], timeout: float = 20.0) -> dict[str, Any]:
    """The tls pool's stats once no session is being opened and the pool is full (so the
    manager opens nothing more while the backend is read); the last reading at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        pool = read_stats()["pools"][TLS_POOL]
        full = pool.get("idle", 0) >= pool.get("size", 0)
        if (pool.get("connecting", 0) == 0 and (full or not pool.get("backend_up", True))) or (
            time.monotonic() >= deadline
        ):
            return dict(pool)
        time.sleep(0.1)


def check_sessions(
    tls: TlsTestbed, backend_sessions: int, live_pool: dict[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    """The accounting record (for summary.json) and the problems (empty when it holds)."""
    opened = tls.tally.opened + (int(live_pool.get("refills", 0)) if live_pool else 0)
    handed = tls.tally.handed_out + (int(live_pool.get("handed_out", 0)) if live_pool else 0)
    discarded = tls.tally.discarded + (int(live_pool.get("discards", 0)) if live_pool else 0)
    idle = int(live_pool.get("idle", 0)) if live_pool else 0
    delta = backend_sessions - tls.backend_sessions_before
    c = tls.counts
    record = {
        "backend_sessions": delta,
        "direct_handshakes": c.direct_handshakes,
        "manager_opened": opened,
        "manager_handed_out": handed,
        "manager_discarded_unused": discarded,
        "manager_idle": idle,
        "socket_cold_starts_served": c.socket_received,
        "tls_cold_starts": c.cold_starts,
    }
    problems = list(tls.tally.errors)
    if handed != c.socket_received:
        problems.append(
            f"the manager handed out {handed} TLS sessions but {c.socket_received} socket-mode cold starts received one"
        )
    if delta != c.direct_handshakes + opened:
        problems.append(
            f"the TLS backend accepted {delta} sessions, expected {c.direct_handshakes} direct handshakes + "
            f"{opened} opened by the pool manager ({handed} handed out, {idle} idle, {discarded} discarded unused)"
        )
    if opened < handed + idle:
        problems.append(f"the manager handed out {handed} and holds {idle} idle but opened only {opened}")
    record["holds"] = not problems
    return record, problems
