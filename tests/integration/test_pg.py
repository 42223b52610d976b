"""The OLTP path on the real engine: the PostgreSQL image, a pool manager container holding
authenticated sessions, and function containers in direct, socket and no-network socket mode."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench import phases
from coldstart_bench.measure.database import POOL_NAME, PostgresBackend
from coldstart_bench.measure.lifecycle import run_temp_dir
from coldstart_bench.measure.testbed import run_labels
from components import pg_pool, pg_wire

pytestmark = pytest.mark.integration

SOCKET_MOUNT = "/run/cpm"
CONFIG_MOUNT = "/cfg"


@pytest.fixture(scope="module")
def pg_images(docker_client: Any) -> dict[str, str]:
    from coldstart_bench.measure.images import ensure_images

    images = ensure_images(docker_client, ["postgres", "pgfunction"], log=lambda _msg: None)
    return {"postgres": images.extra["postgres"], "pgfunction": images.extra["pgfunction"]}


@pytest.fixture(scope="module")
def run_id() -> str:
    return f"pgtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def db(docker_client: Any, pg_images: dict[str, str], network: str, run_id: str) -> Iterator[PostgresBackend]:
    with PostgresBackend(
        docker_client, pg_images["postgres"], network, f"csb-pg-{run_id}", run_labels(run_id)
    ) as backend:
        yield backend


@pytest.fixture(scope="module")
def shared_dirs(db: PostgresBackend) -> Iterator[tuple[Path, Path]]:
    """(socket dir, config dir) on the host, bind-mounted into the manager and functions."""
    base = run_temp_dir("csb-pgint-")
    sock_dir, cfg_dir = base / "sock", base / "cfg"
    sock_dir.mkdir()
    cfg_dir.mkdir()
    base.chmod(0o755)
    cfg_dir.chmod(0o755)
    db.write_password_file(cfg_dir)
    try:
        yield sock_dir, cfg_dir
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _start_manager(
    client: Any,
    image: str,
    network: str,
    name: str,
    labels: dict[str, str],
    sock_dir: Path,
    config: Path,
    event: str = "ready",
) -> Any:
    container = client.containers.run(
        image,
        ["python3", "-m", "components.pool_manager", "--config", f"{CONFIG_MOUNT}/{config.name}"],
        name=name,
        network=network,
        labels=labels,
        detach=True,
        volumes={
            str(sock_dir): {"bind": SOCKET_MOUNT, "mode": "rw"},
            str(config.parent): {"bind": CONFIG_MOUNT, "mode": "ro"},
        },
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = container.logs().decode("utf-8", "replace")
        if f'"event": "{event}"' in logs or f'"event":"{event}"' in logs:
            return container
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.1)
    logs = container.logs().decode("utf-8", "replace")
    container.remove(force=True)
    raise AssertionError(f"pool manager did not become ready:\n{logs[-3000:]}")


@pytest.fixture(scope="module")
def manager(
    docker_client: Any,
    pg_images: dict[str, str],
    network: str,
    run_id: str,
    db: PostgresBackend,
    shared_dirs: tuple[Path, Path],
) -> Iterator[Any]:
    sock_dir, cfg_dir = shared_dirs
    pools = db.pool_config(db.target, f"{CONFIG_MOUNT}/pgpassword", size=4)
    config = cfg_dir / "cpm.json"
    config.write_text(json.dumps({"socket": f"{SOCKET_MOUNT}/pool.sock", "pools": pools}))
    config.chmod(0o644)
    container = _start_manager(
        docker_client, pg_images["pgfunction"], network, f"csb-cpm-{run_id}", run_labels(run_id), sock_dir, config
    )
    try:
        yield container
    finally:
        container.remove(force=True)


def run_function(
    client: Any,
    image: str,
    network: str | None,
    labels: dict[str, str],
    shared: tuple[Path, Path],
    db: PostgresBackend,
    *args: str,
) -> dict[str, Any]:
    """One cold start: create, start, wait, read the JSON line, remove."""
    sock_dir, cfg_dir = shared
    command = [
        "python3", "-m", "components.pg_function", *args,
        "--host", db.host, "--port", str(db.port), "--database", db.database, "--user", db.user,
        "--socket", f"{SOCKET_MOUNT}/pool.sock", "--pool", POOL_NAME,
    ]  # fmt: skip
    kwargs: dict[str, Any] = {"network_mode": "none"} if network is None else {"network": network}
    volumes = {str(sock_dir): {"bind": SOCKET_MOUNT, "mode": "rw"}}
    if "--password-file" in args:
        # Only a function that connects itself sees the credential; injected ones never do.
        volumes[str(cfg_dir)] = {"bind": CONFIG_MOUNT, "mode": "ro"}
    container = client.containers.create(
        image,
        command,
        labels={**labels, "coldstart-bench.role": "function"},
        volumes=volumes,
        **kwargs,
    )
    try:
        container.start()
        status = container.wait(timeout=60)
        out = container.logs(stdout=True, stderr=False).decode()
        err = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"stdout: {out!r} stderr: {err[-2000:]}"
    rec: dict[str, Any] = json.loads(lines[0])
    assert (status["StatusCode"] == 0) == rec["ok"], rec
    return rec


def test_image_serves_scram_and_schema(db: PostgresBackend) -> None:
    assert db.check_balances() == (0, True)
    rows = db.rows("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'bench'", "postgres")
    assert rows == [["t"]]
    assert db.rows("SHOW listen_addresses") == [["*"]]
    # From the host over the loopback-published port, with a real SCRAM exchange.
    sock, meta = pg_pool.open_session(
        {"target": f"127.0.0.1:{db.host_port}", "user": db.user, "password": db.password, "database": db.database}
    )
    assert meta["setup_us"]["auth"] > 0
    sess = pg_wire.Session.adopt(sock, meta)
    assert sess.simple_query("SELECT count(*) FROM accounts")[0].scalar() == "100"
    sess.close()
    with pytest.raises(pg_pool.PgSessionError) as info:
        pg_pool.open_session({"target": f"127.0.0.1:{db.host_port}", "user": db.user, "password": "wrong"})
    assert info.value.sqlstate == "28P01"
    assert db.psql("SELECT 1", "postgres").strip() == "1"


def test_functions_direct_socket_nonet_and_balances(
    docker_client: Any,
    pg_images: dict[str, str],
    network: str,
    run_id: str,
    db: PostgresBackend,
    manager: Any,
    shared_dirs: tuple[Path, Path],
) -> None:
    db.reset_transfers()
    labels = run_labels(run_id)
    image = pg_images["pgfunction"]
    pw = ("--password-file", f"{CONFIG_MOUNT}/pgpassword")
    recs = []
    for _ in range(2):
        recs.append(run_function(docker_client, image, network, labels, shared_dirs, db, "--mode", "direct", *pw))
        recs.append(run_function(docker_client, image, network, labels, shared_dirs, db, "--mode", "socket"))
        recs.append(run_function(docker_client, image, None, labels, shared_dirs, db, "--mode", "socket"))
    assert all(r["ok"] for r in recs), [r["error"] for r in recs]
    direct, socket_bridge, socket_nonet = recs[0::3], recs[1::3], recs[2::3]
    assert all(r["auth_method"] == "sasl" and r["auth_us"] > 0 for r in direct)
    assert all(r["path"] == "socket" and r["fd_recv_us"] == r["acquire_us"] for r in socket_bridge + socket_nonet)
    # Equal footing: the same driver module set loaded in both arms, the same phases, prefetch in both.
    assert all(phases.check(r) == [] and r["library_load_us"] > 0 and r["prefetch_us"] > 0 for r in recs), recs
    assert {r["library"] for r in direct} == {"pg8000+pg_wire"}
    assert {r["library"] for r in socket_bridge + socket_nonet} == {"pg8000+pg_wire+protocol"}
    assert all(r["first_request_us"] == r["first_query_us"] > 0 for r in recs)
    # No networking at all inside the container, yet the injected session works.
    assert all(r["interfaces"] == ["lo"] for r in socket_nonet)
    assert len({r["backend_pid"] for r in recs}) == len(recs)
    assert db.check_balances() == (len(recs), True)


def test_terminated_sessions_are_not_handed_out(
    docker_client: Any,
    pg_images: dict[str, str],
    network: str,
    run_id: str,
    db: PostgresBackend,
    manager: Any,
    shared_dirs: tuple[Path, Path],
) -> None:
    db.reset_transfers()
    pooled = db.backend_pids(application_name=pg_pool.DEFAULT_APPLICATION_NAME)
    assert pooled, "the manager should hold authenticated sessions"
    assert db.terminate_backends(application_name=pg_pool.DEFAULT_APPLICATION_NAME) == len(pooled)
    labels = run_labels(run_id)
    recs = [
        run_function(docker_client, pg_images["pgfunction"], None, labels, shared_dirs, db, "--mode", "socket")
        for _ in range(3)
    ]
    assert all(r["ok"] for r in recs), [r["error"] for r in recs]
    assert not {r["backend_pid"] for r in recs} & set(pooled)
    assert db.check_balances() == (3, True)


def test_wrong_credentials_in_manager_config(
    docker_client: Any,
    pg_images: dict[str, str],
    network: str,
    run_id: str,
    db: PostgresBackend,
) -> None:
    base = run_temp_dir("csb-pgbad-")
    try:
        sock_dir, cfg_dir = base / "sock", base / "cfg"
        sock_dir.mkdir()
        cfg_dir.mkdir()
        for p in (base, cfg_dir):
            p.chmod(0o755)
        (cfg_dir / "pgpassword").write_text("wrong-password\n")
        pools = db.pool_config(db.target, f"{CONFIG_MOUNT}/pgpassword", size=2)
        config = cfg_dir / "cpm.json"
        config.write_text(json.dumps({"socket": f"{SOCKET_MOUNT}/pool.sock", "pools": pools}))
        for f in cfg_dir.iterdir():
            f.chmod(0o644)
        container = _start_manager(
            docker_client,
            pg_images["pgfunction"],
            network,
            f"csb-cpmbad-{run_id}",
            run_labels(run_id),
            sock_dir,
            config,
            event="listening",  # it never gets ready: no session can be opened
        )
        try:
            rec = run_function(
                docker_client,
                pg_images["pgfunction"],
                None,
                run_labels(run_id),
                (sock_dir, cfg_dir),
                db,
                "--mode",
                "socket",
            )
            assert not rec["ok"]
            assert "28P01" in rec["error"] and "password authentication failed" in rec["error"]
            logs = container.logs().decode("utf-8", "replace")
            assert "password authentication failed" in logs
            assert "wrong-password" not in logs
        finally:
            container.remove(force=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_synack_delay_on_the_database_slows_only_direct_handshakes(
    docker_client: Any,
    network: str,
    run_id: str,
    db: PostgresBackend,
    manager: Any,
    pg_images: dict[str, str],
    shared_dirs: tuple[Path, Path],
) -> None:
    """pg-direct-10ms: the sidecar delays the database's SYN-ACKs; pooled sessions are open already."""
    from coldstart_bench.measure.delay import SynAckDelay
    from coldstart_bench.measure.images import ensure_images

    delay_image = ensure_images(docker_client, ["delay"], log=lambda _msg: None).delay
    labels = run_labels(run_id)
    image = pg_images["pgfunction"]
    pw = ("--password-file", f"{CONFIG_MOUNT}/pgpassword")
    with SynAckDelay(docker_client, delay_image, db.container_id, db.port, 10, labels=labels):
        direct = run_function(docker_client, image, network, labels, shared_dirs, db, "--mode", "direct", *pw)
        injected = run_function(docker_client, image, None, labels, shared_dirs, db, "--mode", "socket")
    assert direct["ok"] and injected["ok"], (direct["error"], injected["error"])
    assert direct["handshake_us"] >= 10_000
    assert direct["connect_us"] >= 10_000 + direct["auth_us"]
    assert injected["connect_us"] < 10_000
