"""PostgreSQL over TLS through the pool manager: SSLRequest, verified TLS 1.3, startup and SCRAM in
the manager; the function continues the session with the handed-over keys (record layer) or over
the manager's relay, and a direct function does all of it itself."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.measure.database import ACCOUNTS
from coldstart_bench.measure.tls_certs import RunCertificates, make_run_certificates, openssl_path
from components import pg_pool, pg_wire, protocol, tls13
from tests.support.pg_cluster import LocalCluster, find_pg_bindir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[tuple[LocalCluster, RunCertificates]]:
    if openssl_path() is None or find_pg_bindir() is None:
        pytest.skip("needs the openssl command and PostgreSQL server binaries")
    keydir = Path(tempfile.mkdtemp(prefix="csb-pgtls-", dir="/tmp"))
    certs = make_run_certificates(keydir, ("localhost", "127.0.0.1"))
    if os.geteuid() == 0:  # the server runs as postgres and insists on owning its key
        pw = pwd.getpwnam("postgres")
        for path in (keydir, certs.server_key, certs.server_cert):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    settings = {
        "ssl": "on",
        "ssl_cert_file": str(certs.server_cert),
        "ssl_key_file": str(certs.server_key),
        "ssl_min_protocol_version": "TLSv1.3",
    }
    cluster = LocalCluster(settings=settings).start()
    try:
        yield cluster, certs
    finally:
        cluster.stop()
        shutil.rmtree(keydir, ignore_errors=True)


def _tls_config(cluster: LocalCluster, certs: RunCertificates, **extra: Any) -> dict[str, Any]:
    return cluster.session_config(sslmode="verify-full", ca_file=str(certs.ca_cert), server_name="localhost", **extra)


def test_config_takes_sslmode_verify_full_only() -> None:
    base = {"target": "h:5432", "user": "u"}
    with pytest.raises(pg_pool.PgSessionError, match="sslmode must be disable or verify-full"):
        pg_pool.parse_config({**base, "sslmode": "require"})
    assert pg_pool.parse_config(base).tls is None
    cfg = pg_pool.parse_config({**base, "sslmode": "verify-full", "handoff": "relay"})
    assert cfg.tls is not None and (cfg.tls.host, cfg.tls.port, cfg.tls.handoff) == ("h", 5432, "relay")
    assert pg_pool.resolve_handoff({**base, "sslmode": "verify-full", "handoff": "relay"}) == "relay"
    assert pg_pool.resolve_handoff({**base, "handoff": "relay"}) == "relay"
    with pytest.raises(pg_pool.PgSessionError, match="needs sslmode verify-full"):
        pg_pool.resolve_handoff({**base, "handoff": "record"})


def test_tls_session_is_verified_and_continued_with_the_keys(tls_cluster: tuple[LocalCluster, RunCertificates]) -> None:
    cluster, certs = tls_cluster
    sock, meta = pg_pool.open_session(_tls_config(cluster, certs))
    assert meta["tls"]["version"] == "TLSv1.3" and meta["tls"]["peer_verified"] is True
    assert pg_pool.check_session(sock) is True
    handed = pg_pool.prepare_handout(sock)
    assert handed is not None and handed["tls"]["path"] == "record_layer"
    session = tls13.continue_session(sock, handed["tls"])
    pg = pg_wire.Session.adopt(session, handed)
    pid = pg.simple_query("SELECT pg_backend_pid()")[0].scalar()
    assert pid == str(meta["backend_pid"])
    assert pg.simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0].scalar() == "t"
    pg.close()


def test_a_wrong_server_name_fails_verification(tls_cluster: tuple[LocalCluster, RunCertificates]) -> None:
    cluster, certs = tls_cluster
    with pytest.raises(pg_pool.PgSessionError, match="certificate"):
        pg_pool.open_session(_tls_config(cluster, certs) | {"server_name": "elsewhere"})


def test_idle_tls_session_round_trip_check(tls_cluster: tuple[LocalCluster, RunCertificates]) -> None:
    cluster, certs = tls_cluster
    sock, meta = pg_pool.open_session(_tls_config(cluster, certs, idle_check_s=0))
    assert pg_pool.check_session(sock) is True  # an empty query through the record layer
    assert pg_pool.check_session(sock) is True
    cluster.terminate_backends(application_name=meta["parameters"].get("application_name"))
    deadline = time.monotonic() + 10
    while pg_pool.check_session(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pg_pool.check_session(sock) is False  # FATAL over TLS, then close: never handed out
    pg_pool.close_session(sock)


def _function(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "components.pg_function", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    rec: dict[str, Any] = json.loads(lines[0])
    return rec


@pytest.mark.parametrize("handoff", ["record", "relay"])
def test_manager_and_function_over_tls(
    tls_cluster: tuple[LocalCluster, RunCertificates], tmp_path: Path, handoff: str
) -> None:
    cluster, certs = tls_cluster
    pw_file = cluster.write_password_file(tmp_path)
    sock_path = str(tmp_path / "pool.sock")
    pools = cluster.pool_config(
        cluster.target, str(pw_file), size=2, name="pgtls", sslmode="verify-full", ca_file=str(certs.ca_cert)
    )
    pools["pgtls"] |= {"server_name": "localhost", "handoff": handoff}
    (tmp_path / "cpm.json").write_text(json.dumps({"socket": sock_path, "pools": pools}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "components.pool_manager", "--config", str(tmp_path / "cpm.json")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if protocol.request(sock_path, "ping", timeout=1).get("ok"):
                    break
            except protocol.PoolError:
                time.sleep(0.05)
        before = cluster.check_balances()[0]
        common = ["--host", "127.0.0.1", "--port", str(cluster.port), "--accounts", str(ACCOUNTS)]
        injected = _function("--mode", "socket", *common, "--socket", sock_path, "--pool", "pgtls")
        assert injected["ok"] and injected["verified"], injected
        assert injected["tls_path"] == ("relay" if handoff == "relay" else "record_layer")
        assert injected["handoff"] == ("relay" if handoff == "relay" else "fd")
        direct = _function(
            "--mode", "direct", *common, "--password-file", str(pw_file),
            "--tls-ca", str(certs.ca_cert), "--tls-server-name", "localhost",
        )  # fmt: skip
        assert direct["ok"] and direct["tls_path"] == "handshake" and direct["tls_version"] == "TLSv1.3", direct
        assert direct["tls_handshake_us"] > 0 and direct["connect_us"] > direct["tls_us"] > 0
        assert cluster.check_balances() == (before + 2, True)
        stats = protocol.request(sock_path, "stats", timeout=5)
        assert stats["pools"]["pgtls"]["handed_out"] == 1
        assert stats["relay"]["started"] == (1 if handoff == "relay" else 0)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert cluster.password not in out
