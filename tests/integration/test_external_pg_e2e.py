"""`--bench-pg-target`: the OLTP scenarios against a PostgreSQL the harness did not start.

The "external" server is a database container this test starts outside the harness (own
labels, port published on the host); the harness reaches it through the host's address on
Docker's default bridge, as it would reach any server outside its testbed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.measure.database import DEFAULT_PASSWORD, READY_LINE
from coldstart_bench.measure.images import ensure_images
from coldstart_bench.measure.testbed import run_labels

from .test_bench_e2e import cold_starts, leftovers, run_bench

pytestmark = pytest.mark.integration


@pytest.fixture
def external_pg(docker_client: Any) -> Any:
    images = ensure_images(docker_client, log=lambda m: None)
    container = docker_client.containers.run(
        images.extra["postgres"],
        detach=True,
        ports={"5432/tcp": None},
        labels={**run_labels(f"extpg-{time.time_ns()}"), "coldstart-bench.role": "external-pg"},
    )
    try:
        deadline = time.monotonic() + 60
        while READY_LINE not in container.logs().decode(errors="replace"):
            assert time.monotonic() < deadline, "external database did not start"
            time.sleep(0.2)
        container.reload()
        host_port = int(container.attrs["NetworkSettings"]["Ports"]["5432/tcp"][0]["HostPort"])
        # the host's address on the default bridge, where the published port listens too
        gateway = container.attrs["NetworkSettings"]["Gateway"]
        yield f"{gateway}:{host_port}"
    finally:
        container.remove(force=True)


def test_pg_scenarios_against_your_own_postgres(external_pg: str, tmp_path: Path, docker_client: Any) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text(DEFAULT_PASSWORD + "\n")
    code, out, pid = run_bench(
        tmp_path / "reports",
        "--bench-iterations", "3", "--bench-warmup", "1",
        "-k", cold_starts("pg-direct", "pg-socket", "pg-direct-10ms"),
        "--bench-pg-target", external_pg, "--bench-pg-password-file", str(password_file),
    )  # fmt: skip
    assert code == 0, out[-3000:]
    summary = json.loads((tmp_path / "reports" / "latest" / "summary.json").read_text())
    assert {"pg-direct", "pg-socket"} <= set(summary["scenarios"])
    assert "pg-direct-10ms" not in summary["scenarios"]  # a delay needs the database container
    assert "SYN-ACK delay needs the database container" in out
    assert leftovers(docker_client, pid) == []
