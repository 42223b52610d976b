"""The Redis example's images and function on the real engine: a direct and an injected
connection (the latter with no network) both give a verified record; Redis holds the keys."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from coldstart_bench.containers import PoolManager
from coldstart_bench.measure.images import ensure_images
from coldstart_bench.measure.testbed import run_labels, sweep
from coldstart_bench.measure.volumes import create_volume

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "redis"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_images(docker_client: docker.DockerClient) -> dict[str, str]:
    dirs = {"redis-server": EXAMPLE / "server", "redis-function": EXAMPLE / "function"}
    images = ensure_images(docker_client, ["pool"], log=lambda _m: None, image_dirs=dirs)
    return {"pool": images.pool, **images.extra}


@pytest.fixture
def redis_bed(docker_client: docker.DockerClient, redis_images: dict[str, str]) -> Iterator[dict[str, Any]]:
    run_id = f"redis-{uuid.uuid4().hex[:8]}"
    labels = run_labels(run_id)
    try:
        net = docker_client.networks.create(f"csb-net-{run_id}", driver="bridge", labels=labels)
        volume = create_volume(docker_client, f"csb-sock-{run_id}", labels)
        server = docker_client.containers.run(
            redis_images["redis-server"], name=f"csb-redis-{run_id}", network=net.name, labels=labels, detach=True
        )
        _wait_for_log(server, "Ready to accept connections")
        target = f"{server.name}:6379"
        with PoolManager(
            redis_images["pool"], network=net.name, pools={"redis": {"target": target, "size": 4}},
            socket_volume=volume, name=f"csb-pool-{run_id}", labels=labels,
        ) as manager:  # fmt: skip
            assert manager.socket_path == "/run/cpm/pool.sock"  # where the function asks
            yield {"net": net.name, "volume": volume, "target": target, "server": server, "labels": labels}
    finally:
        sweep(docker_client, run_id)
        assert sweep(docker_client, run_id) == []


def _wait_for_log(container: Any, *needles: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = container.logs().decode(errors="replace")
        if any(n in logs for n in needles):
            return
        time.sleep(0.2)
    raise AssertionError(f"{container.name} not ready within {timeout:.0f} s:\n{logs[-2000:]}")


def _function(
    client: docker.DockerClient, image: str, bed: dict[str, Any], args: list[str], **kw: Any
) -> dict[str, Any]:
    out = client.containers.run(
        image, ["python3", "-m", "redis_function", *args], labels=bed["labels"], remove=True, **kw
    )
    return dict(json.loads(bytes(out).decode().strip().splitlines()[-1]))


def test_direct_and_injected_redis_connections_are_verified(
    docker_client: docker.DockerClient, redis_images: dict[str, str], redis_bed: dict[str, Any]
) -> None:
    fn = redis_images["redis-function"]
    direct = _function(docker_client, fn, redis_bed, ["--mode", "direct", "--target", redis_bed["target"]],
                       network=redis_bed["net"])  # fmt: skip
    assert direct["ok"], direct
    assert direct["path"] == "direct" and direct["resolve_us"] is not None and direct["request_rtt_us"] > 0
    injected = _function(
        docker_client, fn, redis_bed, ["--mode", "socket", "--pool", "redis"], network="none",
        volumes={redis_bed["volume"]: {"bind": "/run/cpm", "mode": "rw"}},
    )  # fmt: skip
    assert injected["ok"], injected
    assert injected["path"] == "socket" and injected["fd_recv_us"] is not None
    assert injected["interfaces"] == ["lo"] and injected["fd_check"]["peer_matches"]
    assert injected["peer"] == direct["peer"], "the injected fd leads to the same Redis"
    code, out = redis_bed["server"].exec_run(["redis-cli", "--scan", "--pattern", "coldstart-bench:*"])
    assert code == 0 and len(out.split()) == 2, out
