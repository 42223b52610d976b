"""The part fixtures as a user meets them: a benchmark file outside the test tree, and the one in
examples/, run by pytest in a subprocess from the repository root, pass; the part classes work on
their own and leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.containers import BenchNetwork, ColdStart, EchoServer, FunctionImage, PoolManager
from coldstart_bench.containers.labels import LABEL_RUN, new_run_id, run_labels, sweep

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "my_bench" / "test_my_function.py"

pytestmark = pytest.mark.integration

USER_FILE = """
def test_mine(echo_server, pool_manager, function_image, cold_start):
    direct = cold_start(function_image, mode="direct", target=echo_server)
    injected = cold_start(function_image, mode="socket", pool=pool_manager)
    assert direct.ok, direct.error
    assert injected.ok, injected.error
    print("PATHS", direct.path, injected.path)
"""


def _pytest(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Not an xdist worker's environment: pytest-benchmark turns itself off inside one, and then
    # benchmark.pedantic runs the function once instead of its rounds.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(path), "-p", "no:xdist", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )


def _plugin_args() -> tuple[str, ...]:
    """The plugin loads by its entry point when the package is installed; a file outside the
    checkout does not see its conftest.py, so without the package it is named."""
    import importlib.metadata

    try:
        importlib.metadata.distribution("coldstart-bench")
        return ()
    except importlib.metadata.PackageNotFoundError:
        return ("-p", "coldstart_bench.plugin")


def test_a_users_file_outside_the_test_tree_runs_a_direct_and_a_socket_cold_start(
    tmp_path: Path, docker_client: Any
) -> None:
    user_file = tmp_path / "test_mine.py"
    user_file.write_text(textwrap.dedent(USER_FILE))
    done = _pytest(user_file, "-s", *_plugin_args())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout
    assert "PATHS direct socket" in done.stdout


def test_the_example_benchmark_file_passes(docker_client: Any) -> None:
    done = _pytest(EXAMPLE)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "3 passed" in done.stdout
    assert "test_benchmark_socket_cold_start" in done.stdout  # pytest-benchmark's table


def test_the_parts_on_their_own_leave_nothing_behind(docker_client: Any) -> None:
    run_id = new_run_id()
    labels = run_labels(run_id)
    try:
        with (
            BenchNetwork(docker_client, labels=labels) as net,
            EchoServer(network=net.name, labels=labels) as echo,
            PoolManager(network=net.name, pools={"echo": {"target": echo.target, "size": 2}}, labels=labels) as pm,
            ColdStart(docker_client, network=net.name, labels=labels) as run,
        ):
            socket_dir = pm.socket_dir
            assert socket_dir is not None and (socket_dir / "pool.sock").exists()
            stats = pm.stats()
            assert stats is not None and "echo" in stats["pools"]
            sample = run(FunctionImage(), mode="socket", pool=pm, network="none")
            assert sample.ok, sample.error
            assert sample.path == "socket" and sample.interfaces == "lo"
        assert socket_dir is not None and not socket_dir.exists()  # its own temporary directory went too
        left = docker_client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
        assert left == []
        assert docker_client.networks.list(filters={"label": f"{LABEL_RUN}={run_id}"}) == []
    finally:
        sweep(docker_client, run_id)


def test_a_part_that_does_not_become_ready_is_removed_and_named(docker_client: Any) -> None:
    from coldstart_bench.containers import ContainerError

    run_id = new_run_id()
    labels = run_labels(run_id)
    try:
        with BenchNetwork(docker_client, labels=labels) as net:
            # A pool size that is not a number: the manager exits with a usage error, never ready.
            broken = PoolManager(network=net.name, pools={"echo": {"target": "echo:7000", "size": "lots"}},
                                 labels=labels, start_timeout=20)  # fmt: skip
            with pytest.raises(ContainerError, match=broken.name):
                broken.start()
            assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"}) == []
    finally:
        sweep(docker_client, run_id)
