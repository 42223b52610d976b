"""Authenticated-session pools against a real PostgreSQL: hand-out, health, errors, transfers.

The server is a throwaway cluster from the host's binaries; the pool manager and the function
run as real processes. Fake-server cases (socketpair) pin the health check's byte handling.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench import phases
from coldstart_bench.measure.database import ACCOUNTS
from components import pg_pool, pg_wire, protocol
from tests.support.pg_cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]


def _nothing_pending(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    return False


# --- hand-out ----------------------------------------------------------------------------------


def test_open_session_hands_out_ready_session(cluster: LocalCluster) -> None:
    sock, meta = pg_pool.open_session(cluster.session_config())
    try:
        # Blocking, nothing stranded past ReadyForQuery, NODELAY like libpq.
        assert sock.gettimeout() is None
        assert not fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        assert _nothing_pending(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert meta["kind"] == "postgres" and meta["role"] == "bench" and meta["database"] == "bench"
        assert meta["tx_status"] == "I"
        assert meta["parameters"]["server_encoding"] == "UTF8"
        assert meta["parameters"]["session_authorization"] == "bench"
        assert isinstance(meta["secret_key"], int)
        assert meta["setup_us"]["auth"] > 0  # SCRAM really happened
        sess = pg_wire.Session.adopt(sock, meta)
        row = sess.simple_query("SELECT pg_backend_pid(), current_user, current_database()")[0].rows[0]
        assert row == (str(meta["backend_pid"]), "bench", "bench")
        sess.close()
    finally:
        sock.close()


def test_meta_carries_no_credentials(cluster: LocalCluster, tmp_path: Path) -> None:
    pw_file = cluster.write_password_file(tmp_path)
    cfg = cluster.session_config(password=None, password_file=str(pw_file))
    sock, meta = pg_pool.open_session(cfg)
    sock.close()
    text = json.dumps(meta)
    assert cluster.password not in text
    assert "password" not in text.lower()


def test_password_from_env(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSB_TEST_PGPASS", cluster.password)
    sock, _ = pg_pool.open_session(cluster.session_config(password=None, password_env="CSB_TEST_PGPASS"))
    sock.close()


def test_init_sql_runs_before_hand_out(cluster: LocalCluster) -> None:
    sock, meta = pg_pool.open_session(cluster.session_config(init_sql=["SET statement_timeout = '5s'"]))
    sess = pg_wire.Session.adopt(sock, meta)
    assert sess.simple_query("SHOW statement_timeout")[0].scalar() == "5s"
    sess.close()
    with pytest.raises(pg_pool.PgSessionError, match="transaction open"):
        pg_pool.open_session(cluster.session_config(init_sql=["BEGIN"]))


# --- errors ------------------------------------------------------------------------------------


def test_wrong_password_is_a_clear_startup_error(cluster: LocalCluster) -> None:
    with pytest.raises(pg_pool.PgSessionError) as info:
        pg_pool.open_session(cluster.session_config(password="not-the-password"))
    text = str(info.value)
    assert info.value.sqlstate == "28P01"
    assert "password authentication failed" in text and "bench@127.0.0.1" in text
    assert "not-the-password" not in text


def test_unknown_role_and_database(cluster: LocalCluster) -> None:
    with pytest.raises(pg_pool.PgSessionError) as info:
        pg_pool.open_session(cluster.session_config(user="nobody"))
    assert info.value.sqlstate == "28P01"
    with pytest.raises(pg_pool.PgSessionError) as info2:
        pg_pool.open_session(cluster.session_config(database="nodb"))
    assert info2.value.sqlstate == "3D000"


def test_unreachable_server() -> None:
    from tests.support.pg_cluster import free_port

    with pytest.raises(pg_pool.PgSessionError, match="cannot connect"):
        pg_pool.open_session({"target": f"127.0.0.1:{free_port()}", "user": "u", "connect_timeout": 1})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"target": "h:5432"}, "needs 'user'"),
        ({"target": "h:notaport", "user": "u"}, "bad target"),
        ({"target": "h:5432", "user": "u", "sslmode": "require"}, "TLS"),
        ({"target": "h:5432", "user": "u", "password_file": "/nonexistent/pw"}, "password_file"),
        ({"target": "h:5432", "user": "u", "password_env": "CSB_SURELY_UNSET"}, "password_env"),
    ],
)
def test_config_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(pg_pool.PgSessionError, match=message):
        pg_pool.parse_config(config)


def test_config_defaults() -> None:
    cfg = pg_pool.parse_config({"host": "db", "user": "bench"})
    assert (cfg.host, cfg.port, cfg.database) == ("db", 5432, "bench")
    assert cfg.startup_params["client_encoding"] == "UTF8"


# --- health check ------------------------------------------------------------------------------


def test_check_session_fresh_and_after_round_trip(cluster: LocalCluster) -> None:
    sock, meta = pg_pool.open_session(cluster.session_config(idle_check_s=0))
    try:
        for _ in range(3):  # idle_check_s=0: every check is a round trip
            assert pg_pool.check_session(sock)
            assert _nothing_pending(sock)
        sess = pg_wire.Session.adopt(sock, meta)
        assert sess.query("SELECT $1::int", (7,)).scalar() == "7"
        sess.close()
    finally:
        sock.close()


def test_check_session_unknown_socket_gets_round_trip(cluster: LocalCluster) -> None:
    sock, meta = pg_pool.open_session(cluster.session_config())
    dup = socket.socket(fileno=os.dup(sock.fileno()))  # a socket object the module never saw
    sock.close()
    try:
        assert pg_pool.session_meta(dup) is None
        assert pg_pool.check_session(dup)
        assert pg_wire.Session.adopt(dup, meta).simple_query("SELECT 1")[0].scalar() == "1"
    finally:
        dup.close()


def test_terminated_session_is_never_handed_out(cluster: LocalCluster) -> None:
    socks = [pg_pool.open_session(cluster.session_config(application_name="csb-term"))[0] for _ in range(3)]
    survivor, _ = pg_pool.open_session(cluster.session_config(application_name="csb-keep"))
    try:
        assert all(pg_pool.check_session(s) for s in socks)
        assert cluster.terminate_backends(application_name="csb-term") == 3
        deadline = time.monotonic() + 5
        while any(pg_pool.check_session(s) for s in socks) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(pg_pool.check_session(s) for s in socks)
        assert pg_pool.check_session(survivor)
    finally:
        for s in [*socks, survivor]:
            s.close()


def test_check_session_closed_socket() -> None:
    a, b = socket.socketpair()
    a.close()
    b.close()
    assert not pg_pool.check_session(a)


# Fake server over a socketpair: what the check does with bytes the server sent unasked.
_NOTICE = b"N" + (4 + 11).to_bytes(4, "big") + b"SNOTICE\x00M\x00\x00"
_READY = b"Z\x00\x00\x00\x05I"
_PARAM = b"S\x00\x00\x00\x0fTimeZone\x00X\x00"
_EMPTY = b"I\x00\x00\x00\x04"
_ERROR = b"E\x00\x00\x00\x0cSFATAL\x00\x00"


@pytest.mark.parametrize(
    ("server_bytes", "healthy"),
    [
        (b"", True),  # nothing pending, unknown socket: round trip answered
        (_NOTICE, True),  # a notice is absorbed
        (_NOTICE[:7], True),  # a partial message: round trip reads the rest exactly
        (_PARAM, False),  # unknown session: no meta to update, the receiver's would be stale
        (_ERROR, False),
    ],
)
def test_check_session_pending_bytes(server_bytes: bytes, healthy: bool) -> None:
    client, server = socket.socketpair()
    received: list[bytes] = []

    def answer_probe() -> None:
        # Like the server: EmptyQueryResponse + ReadyForQuery only in answer to the empty query.
        with contextlib.suppress(OSError):
            server.settimeout(3)
            received.append(server.recv(16))
            server.sendall(_EMPTY + _READY)

    responder = threading.Thread(target=answer_probe, daemon=True)
    try:
        server.sendall(server_bytes)
        responder.start()
        if server_bytes == _NOTICE[:7]:
            time.sleep(0.05)
            server.sendall(_NOTICE[7:])
        assert pg_pool.check_session(client) is healthy
        if healthy:
            responder.join(5)
            assert received == [b"Q\x00\x00\x00\x05\x00"]  # exactly one empty query
            assert _nothing_pending(client)
    finally:
        client.close()
        server.close()
        responder.join(5)


def test_check_session_silent_server_times_out() -> None:
    client, server = socket.socketpair()
    try:
        started = time.monotonic()
        assert not pg_pool.check_session(client)
        assert time.monotonic() - started < pg_pool.DEFAULT_CHECK_TIMEOUT_S + 1
    finally:
        client.close()
        server.close()


def test_check_session_server_eof() -> None:
    client, server = socket.socketpair()
    server.close()
    try:
        assert not pg_pool.check_session(client)
    finally:
        client.close()


# --- through the real manager and function processes ------------------------------------------


@pytest.fixture
def manager(cluster: LocalCluster, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    pw_file = cluster.write_password_file(tmp_path)
    sock_path = str(tmp_path / "pool.sock")
    cfg = {"socket": sock_path, "pools": cluster.pool_config(cluster.target, str(pw_file), size=3)}
    (tmp_path / "cpm.json").write_text(json.dumps(cfg))
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
        else:
            pytest.fail("pool manager did not come up")
        yield sock_path, pw_file
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _function(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "components.pg_function", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    rec = json.loads(lines[0])
    assert (proc.returncode == 0) == rec["ok"], rec
    return rec


def test_manager_hands_out_authenticated_sessions(cluster: LocalCluster, manager: tuple[str, Path]) -> None:
    sock_path, _ = manager
    sock, reply = protocol.acquire(sock_path, pool="pg", timeout=10)
    meta = reply["meta"]
    sess = pg_wire.Session.adopt(sock, meta)
    assert sess.simple_query("SELECT pg_backend_pid()")[0].scalar() == str(meta["backend_pid"])
    assert cluster.password not in json.dumps(reply)
    sess.close()


def test_n_transfers_commit_exactly_n_rows(cluster: LocalCluster, manager: tuple[str, Path]) -> None:
    sock_path, pw_file = manager
    cluster.reset_transfers()
    common = ["--host", "127.0.0.1", "--port", str(cluster.port), "--accounts", str(ACCOUNTS)]
    recs = []
    for i in range(8):
        mode = "socket" if i % 2 == 0 else "direct"
        recs.append(_function("--mode", mode, *common, "--socket", sock_path, "--password-file", str(pw_file)))
    assert all(r["ok"] and r["verified"] for r in recs), [r["error"] for r in recs]
    assert [r["path"] for r in recs] == ["socket", "direct"] * 4
    direct = [r for r in recs if r["mode"] == "direct"]
    assert all(r["auth_method"] == "sasl" and r["auth_us"] > 0 and r["startup_us"] > 0 for r in direct)
    assert all(r["connect_us"] >= r["resolve_us"] + r["handshake_us"] for r in direct)
    # Equal footing: both modes load the same driver set (socket mode also the pool client), the
    # phases add up, and both query through pg_wire.
    assert all(phases.check(r) == [] and r["library_load_us"] > 0 for r in recs), recs
    assert {r["library"] for r in recs} == {"pg8000+pg_wire", "pg8000+pg_wire+protocol"}
    # Every cold start got its own backend: no session handed out twice.
    assert len({r["backend_pid"] for r in recs}) == len(recs)
    n, ok = cluster.check_balances()
    assert (n, ok) == (8, True)


def test_function_fallback_and_failure(cluster: LocalCluster, tmp_path: Path) -> None:
    pw_file = cluster.write_password_file(tmp_path)
    common = ["--host", "127.0.0.1", "--port", str(cluster.port), "--socket", str(tmp_path / "absent.sock")]
    rec = _function("--mode", "socket", *common, "--password-file", str(pw_file), "--fallback")
    assert rec["ok"] and rec["path"] == "fallback" and "manager_unavailable" in rec["fallback_reason"]
    rec = _function("--mode", "socket", *common)
    assert not rec["ok"] and "manager_unavailable" in rec["error"]
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    rec = _function("--mode", "direct", *common, "--password-file", str(bad))
    assert not rec["ok"] and "28P01" in rec["error"]


def test_manager_with_wrong_credentials_reports_the_startup_error(cluster: LocalCluster, tmp_path: Path) -> None:
    sock_path = str(tmp_path / "pool.sock")
    pools = cluster.pool_config(cluster.target, str(tmp_path / "pw"), size=2)
    (tmp_path / "pw").write_text("definitely-wrong\n")
    (tmp_path / "cpm.json").write_text(json.dumps({"socket": sock_path, "pools": pools}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "components.pool_manager", "--config", str(tmp_path / "cpm.json")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        error: protocol.PoolError | None = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                protocol.acquire(sock_path, pool="pg", timeout=5)
            except protocol.PoolError as exc:
                error = exc
                if exc.code != protocol.MANAGER_UNAVAILABLE:
                    break
                time.sleep(0.05)
        assert error is not None and "28P01" in error.detail and "password authentication failed" in error.detail
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "password authentication failed" in out
    assert "definitely-wrong" not in out


def test_external_postgres_admin_over_the_bench_role(cluster: LocalCluster, tmp_path: Path) -> None:
    """Pointing the harness at your own server: schema, balances and terminate without superuser."""
    from coldstart_bench.measure.database import ExternalPostgres

    cluster.psql("CREATE DATABASE ext OWNER bench", database="postgres")
    pw_file = cluster.write_password_file(tmp_path)
    ext = ExternalPostgres("127.0.0.1", cluster.port, database="ext", password_file=str(pw_file))
    assert ext.load_schema() is True
    assert ext.load_schema() is False
    assert ext.check_balances() == (0, True)
    sock, meta = pg_pool.open_session(cluster.session_config(database="ext", application_name="ext-victim"))
    try:
        sess = pg_wire.Session.adopt(sock, meta)
        sess.query("UPDATE accounts SET balance = balance - $1 WHERE id = 1", (10,))
        assert ext.check_balances() == (0, False)  # money vanished without a history row
        ext.reset_transfers()
        assert ext.check_balances() == (0, True)
        assert ext.terminate_backends(application_name="ext-victim") == 1
    finally:
        sock.close()
    with pytest.raises(Exception, match="28P01"):
        ExternalPostgres("127.0.0.1", cluster.port, database="ext", password="wrong").check_balances()


def test_quick_check_never_blocks_and_defers_when_unsure(cluster: LocalCluster) -> None:
    sock, _ = pg_pool.open_session(cluster.session_config(application_name="csb-quick"))
    stale, _ = pg_pool.open_session(cluster.session_config(idle_check_s=0))
    unknown = socket.socket(fileno=os.dup(stale.fileno()))
    try:
        assert pg_pool.quick_check(sock) is True  # fresh, nothing pending
        assert pg_pool.quick_check(stale) is None  # idle past the delay: round trip needed
        assert pg_pool.quick_check(unknown) is None
        assert cluster.terminate_backends(application_name="csb-quick") == 1
        deadline = time.monotonic() + 5
        while pg_pool.quick_check(sock) is not False and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pg_pool.quick_check(sock) is False
    finally:
        for s in (sock, stale, unknown):
            s.close()
    assert pg_pool.quick_check(sock) is False  # closed


def test_parameter_status_on_idle_session_updates_its_meta() -> None:
    client, server = socket.socketpair()
    meta: dict[str, Any] = {"parameters": {"TimeZone": "UTC"}}
    with pg_pool._SESSIONS_LOCK:
        pg_pool._SESSIONS[client] = pg_pool._SessionState(30.0, 1.0, time.monotonic(), meta)
    try:
        server.sendall(_PARAM)
        assert pg_pool.check_session(client)
        assert pg_pool.session_meta(client) == {"parameters": {"TimeZone": "X"}}
        assert _nothing_pending(client)
    finally:
        client.close()
        server.close()
