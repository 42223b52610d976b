"""PgBouncer in front of a real local PostgreSQL (SCRAM both sides, transaction pooling), and the
OLTP function's per-query timings and Unix socket connect, through it and directly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.measure.host_processes import REPO, env
from coldstart_bench.measure.pgbouncer import LocalPgBouncer, PgBouncerError, pgbouncer_ini, userlist
from tests.support.pg_cluster import LocalCluster

HAVE_PGBOUNCER = shutil.which("pgbouncer") is not None or Path("/usr/sbin/pgbouncer").exists()
needs_pgbouncer = pytest.mark.skipif(
    not HAVE_PGBOUNCER, reason="pgbouncer is not installed (apt-get install pgbouncer)"
)


@pytest.fixture(scope="module")
def bouncer(cluster: LocalCluster) -> Iterator[LocalPgBouncer]:
    if not HAVE_PGBOUNCER:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    with LocalPgBouncer(cluster, pool_size=3) as b:
        yield b


def pg_function(*args: str) -> tuple[int, dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "components.pg_function", "--mode", "direct", *args],
        capture_output=True, text=True, timeout=60, env=env(), cwd=REPO,
    )  # fmt: skip
    assert out.stdout.strip(), out
    return out.returncode, json.loads(out.stdout)


def password_file(cluster: LocalCluster, tmp_path: Path, password: str | None = None) -> str:
    path = tmp_path / "pw"
    path.write_text((password or cluster.password) + "\n")
    return str(path)


@needs_pgbouncer
def test_function_through_pgbouncer_tcp_runs_every_query(
    cluster: LocalCluster, bouncer: LocalPgBouncer, tmp_path: Path
) -> None:
    before = cluster.check_balances()[0]
    rc, rec = pg_function(
        "--host", "127.0.0.1", "--port", str(bouncer.port), "--password-file", password_file(cluster, tmp_path),
        "--queries", "4",
    )  # fmt: skip
    assert rc == 0 and rec["ok"] is True and rec["verified"] is True, rec
    assert rec["auth_method"] == "sasl" and rec["peer"] == bouncer.target
    assert rec["queries"] == 4 and len(rec["query_us"]) == 4 and all(q > 0 for q in rec["query_us"])
    assert rec["query_first_us"] == rec["query_us"][0]
    assert min(rec["query_us"]) <= rec["query_p50_us"] <= max(rec["query_us"])
    assert cluster.check_balances() == (before + 1, True)


@needs_pgbouncer
def test_function_through_pgbouncer_unix_socket(cluster: LocalCluster, bouncer: LocalPgBouncer, tmp_path: Path) -> None:
    rc, rec = pg_function(
        "--host", str(bouncer.socket_dir), "--port", str(bouncer.port),
        "--password-file", password_file(cluster, tmp_path),
    )  # fmt: skip
    assert rc == 0 and rec["ok"] is True, rec
    assert rec["peer"] == f"{bouncer.socket_dir}/.s.PGSQL.{bouncer.port}"
    assert rec["auth_method"] == "sasl" and rec["queries"] == 5 and len(rec["query_us"]) == 5


@needs_pgbouncer
def test_pgbouncer_reuses_server_connections(cluster: LocalCluster, bouncer: LocalPgBouncer, tmp_path: Path) -> None:
    pw = password_file(cluster, tmp_path)
    opened_before = bouncer.sessions_opened()
    runs = 4
    for _ in range(runs):
        rc, rec = pg_function("--host", "127.0.0.1", "--port", str(bouncer.port), "--password-file", pw)
        assert rc == 0, rec
    opened = bouncer.sessions_opened() - opened_before
    # Cold starts one after another share what the pool already holds: fewer server logins than runs.
    assert opened < runs
    assert 1 <= bouncer.server_connections() <= bouncer.pool_size


@needs_pgbouncer
def test_pgbouncer_enforces_scram_on_the_client_side(
    cluster: LocalCluster, bouncer: LocalPgBouncer, tmp_path: Path
) -> None:
    rc, rec = pg_function(
        "--host", "127.0.0.1", "--port", str(bouncer.port),
        "--password-file", password_file(cluster, tmp_path, "not-the-password"),
    )  # fmt: skip
    assert rc == 1 and rec["ok"] is False
    assert "authentication failed" in rec["error"], rec  # PgBouncer says 08P01, PostgreSQL 28P01
    assert "not-the-password" not in json.dumps(rec)


def test_direct_function_times_each_query(cluster: LocalCluster, tmp_path: Path) -> None:
    rc, rec = pg_function(
        "--host", cluster.host, "--port", str(cluster.port), "--password-file", password_file(cluster, tmp_path),
        "--queries", "0",
    )  # fmt: skip
    assert rc == 0 and rec["ok"] is True and rec["query_us"] == [] and rec["query_p50_us"] is None
    bad = subprocess.run(
        [sys.executable, "-m", "components.pg_function", "--mode", "direct", "--queries", "-1"],
        capture_output=True, text=True, timeout=30, env=env(), cwd=REPO,
    )  # fmt: skip
    assert bad.returncode == 2 and "--queries" in bad.stderr


def test_config_text() -> None:
    ini = pgbouncer_ini(db_host="db", db_port=5432, database="bench", auth_file="/a/u.txt", socket_dir="/run/pgb")
    assert "bench = host=db port=5432 dbname=bench" in ini
    for line in ("auth_type = scram-sha-256", "pool_mode = transaction", "unix_socket_dir = /run/pgb"):
        assert line in ini.splitlines()
    assert "pidfile" not in ini  # empty settings are left out
    with pytest.raises(PgBouncerError, match="pool_mode"):
        pgbouncer_ini(db_host="db", db_port=1, database="b", auth_file="f", socket_dir="d", pool_mode="bogus")
    assert userlist({"bench": "SCRAM-SHA-256$4096:abc"}) == '"bench" "SCRAM-SHA-256$4096:abc"\n'
    with pytest.raises(PgBouncerError, match="double quotes"):
        userlist({"bench": 'a"b'})
