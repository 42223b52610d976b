"""The other-language functions and the proxy on the real engine: the C and Node.js images through
the fd-3 entrypoint (with and without networking), and PgBouncer in front of the PostgreSQL image."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench import phases
from coldstart_bench.measure.database import PostgresBackend
from coldstart_bench.measure.function_specs import STAMP_ONLY
from coldstart_bench.measure.pgbouncer import CONTAINER_SOCKET_DIR, PGBOUNCER_PORT, PgBouncerContainer
from coldstart_bench.measure.testbed import run_labels

pytestmark = pytest.mark.integration

POOL_MOUNT = "/run/coldstart"
ENTRYPOINT = ["/usr/local/bin/fd3-entrypoint", "--socket", f"{POOL_MOUNT}/pool.sock", "--"]
NODE_FUNCTION = ["node", "/app/components/node/function.js"]


@pytest.fixture(scope="module")
def run_id() -> str:
    return f"langtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def pool_dir(docker_client: Any, network: str, run_id: str) -> Iterator[Path]:
    """An echo server (alias ``echo``) and a pool manager whose socket directory is returned."""
    from coldstart_bench.measure.images import ensure_images

    images = ensure_images(docker_client, ["echo", "pool"], log=lambda _msg: None)
    base = Path(tempfile.mkdtemp(prefix="csb-lang-", dir="/tmp"))
    base.chmod(0o755)  # callers reach the socket through it; only the manager (root) writes in it
    labels = run_labels(run_id)
    echo = docker_client.containers.create(images.echo, name=f"csb-echo-{run_id}", labels=labels)
    docker_client.networks.get(network).connect(echo, aliases=["echo"])
    echo.start()
    docker_client.containers.run(
        images.pool, name=f"csb-pool-{run_id}", detach=True, labels=labels, network=network,
        command=["python3", "-m", "components.pool_manager", "--target", "echo:7000", "--size", "4",
                 "--socket", f"{POOL_MOUNT}/pool.sock", "--socket-mode", "0666"],
        volumes={str(base): {"bind": POOL_MOUNT, "mode": "rw"}},
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (base / "pool.sock").exists():
        assert time.monotonic() < deadline, "pool manager socket never appeared"
        time.sleep(0.1)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_function(client: Any, image: str, argv: list[str], run_id: str, **kwargs: Any) -> dict[str, Any]:
    out = client.containers.run(image, argv, remove=True, labels=run_labels(run_id), **kwargs)
    record: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return record


@pytest.mark.parametrize(
    ("image", "argv", "networked"),
    [
        ("cfunction", ["/usr/local/bin/c-function"], True),
        ("function", ["python3", "-m", "components.function"], True),
        ("nodefunction", NODE_FUNCTION, True),
        ("nodefunction", NODE_FUNCTION, False),
    ],
    ids=["c", "python", "node", "node-nonet"],
)
def test_function_image_adopts_fd3_from_the_entrypoint(
    docker_client: Any, network: str, pool_dir: Path, run_id: str, image: str, argv: list[str], networked: bool
) -> None:
    from coldstart_bench.measure.images import ensure_images

    images = ensure_images(docker_client, [image], log=lambda _msg: None)
    tag = images.extra.get(image) or getattr(images, image)  # "function" is a core image
    where: dict[str, Any] = {"network": network} if networked else {"network_mode": "none"}
    mounts = {str(pool_dir): {"bind": POOL_MOUNT, "mode": "rw"}}
    rec = run_function(
        docker_client, tag, [*ENTRYPOINT, *argv, "--mode", "fd3", "--target", "echo:7000"], run_id,
        volumes=mounts, **where,
    )  # fmt: skip
    assert rec["ok"] is True and rec["path"] == "fd3", rec
    assert rec["fd_check"]["ok"] is True and rec["fd_check"]["peer_matches"] is True
    assert rec["runtime_startup_us"] > 0 and rec["fd_recv_us"] > 0
    assert phases.check(rec) == [] and rec["pre_main_us"] >= rec["fd_recv_us"]
    if not networked:
        assert rec["interfaces"] == ["lo"]
    if networked:
        direct_argv = [*STAMP_ONLY, *argv, "--mode", "direct", "--target", "echo:7000"]
        direct = run_function(docker_client, tag, direct_argv, run_id, **where)
        assert direct["ok"] is True and direct["path"] == "direct" and direct["resolve_us"] > 0, direct
        assert phases.check(direct) == [] and direct["pre_main_us"] == 0 and direct["t_entry_ns"] < direct["t_main_ns"]


def test_pgbouncer_in_front_of_postgres(docker_client: Any, network: str, run_id: str) -> None:
    from coldstart_bench.measure.images import ensure_images

    images = ensure_images(docker_client, ["postgres", "pgfunction", "pgbouncer"], log=lambda _msg: None).extra
    secrets = Path(tempfile.mkdtemp(prefix="csb-lang-pw-", dir="/tmp"))
    secrets.chmod(0o755)
    labels = run_labels(run_id)
    try:
        with (
            PostgresBackend(
                docker_client, images["postgres"], network, f"csb-pg-{run_id}", labels, publish=False
            ) as db,
            PgBouncerContainer(docker_client, images["pgbouncer"], db, f"csb-pgb-{run_id}", labels, pool_size=4) as pgb,
        ):
            db.write_password_file(secrets)
            argv = ["python3", "-m", "components.pg_function", "--mode", "direct", "--queries", "3"]
            argv += ["--password-file", "/secrets/pgpassword", "--port", str(PGBOUNCER_PORT)]
            vols = {str(secrets): {"bind": "/secrets", "mode": "ro"}}
            opened = pgb.sessions_opened()
            tcp = run_function(
                docker_client, images["pgfunction"], [*argv, "--host", pgb.name], run_id, network=network, volumes=vols
            )
            unix = run_function(
                docker_client, images["pgfunction"], [*argv, "--host", CONTAINER_SOCKET_DIR], run_id,
                network_mode="none", volumes={**vols, **pgb.socket_mount},
            )  # fmt: skip
            for rec in (tcp, unix):
                assert rec["ok"] is True and rec["verified"] is True and rec["auth_method"] == "sasl", rec
                assert len(rec["query_us"]) == 3
            assert unix["peer"] == f"{CONTAINER_SOCKET_DIR}/.s.PGSQL.{PGBOUNCER_PORT}" and unix["interfaces"] == ["lo"]
            assert 1 <= pgb.server_connections() <= 4
            assert pgb.sessions_opened() - opened <= 2  # two cold starts, the pool reuses its server connection
            assert db.check_balances() == (2, True)
    finally:
        shutil.rmtree(secrets, ignore_errors=True)
