"""A short benchmark against another engine (DOCKER_HOST), starting from an empty image store.

The second engine has its own data root and socket, so every path the harness bind-mounted
from this machine would be wrong there; the run must pass on it and leave nothing labelled
behind on either engine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from coldstart_bench.measure.testbed import LABEL, LABEL_PID

from .engine2 import EngineStartError, SecondEngine
from .test_bench_e2e import cold_starts

REPO = Path(__file__).resolve().parents[2]
# Images built from nothing on the second engine (three mmdebstrap bases) plus the run itself.
RUN_TIMEOUT_S = 1500
SELECTION = cold_starts("socket", "direct")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def second_engine(docker_client: docker.DockerClient) -> Iterator[SecondEngine]:
    root = Path(tempfile.mkdtemp(prefix="csb-engine2-", dir="/tmp"))
    engine = SecondEngine(root=root, bridge=f"csb2br{os.getpid() % 10000}", subnet="10.215.254.1/24")
    try:
        engine.start()
    except EngineStartError as exc:
        pytest.skip(f"a second Docker engine cannot start here: {exc}")
    try:
        yield engine
    finally:
        engine.stop()


def _labelled(client: docker.DockerClient, pid: int | None = None) -> list[str]:
    """Containers, networks and volumes with the project's label (of one process when pid is given)."""
    label = f"{LABEL_PID}={pid}" if pid is not None else LABEL
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters={"label": label})]
    found += [f"network {n.name}" for n in client.networks.list(filters={"label": label})]
    found += [f"volume {v.name}" for v in client.volumes.list(filters={"label": label})]
    return found


def _bench_env(engine: SecondEngine) -> dict[str, str]:
    env = {
        **os.environ,
        "DOCKER_HOST": engine.docker_host,
        # No registry on a fresh engine: the base is built offline, as on a machine without one.
        "COLDSTART_SKIP_REGISTRY": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("COLDSTART_BASE_IMAGE", None)
    return env


def test_missing_mmdebstrap_stops_the_run_once_before_any_test(second_engine: SecondEngine, tmp_path: Path) -> None:
    # Runs first, while the second engine's image store is still empty: no base image, no
    # registry, and a PATH without mmdebstrap.
    env = {**_bench_env(second_engine), "PATH": str(Path(sys.executable).parent)}
    argv = [sys.executable, "-m", "pytest", "bench/", "-p", "no:xdist", "-p", "no:cacheprovider", "-q",
            "--bench-report-dir", str(tmp_path / "reports")]  # fmt: skip
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == int(pytest.ExitCode.USAGE_ERROR), output[-3000:]
    assert output.count("mmdebstrap is not installed") == 1, output[-3000:]
    assert "apt-get install mmdebstrap" in output
    assert not re.search(r"\b\d+ (passed|failed|error)", output), "no benchmark test may have run"


def test_benchmark_on_a_second_engine_passes_and_leaves_nothing(
    second_engine: SecondEngine, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    if not (REPO / ".cache" / "wheels").is_dir() and not os.environ.get("COLDSTART_WHEEL_CACHE"):
        pytest.skip("the delay image's wheels are not cached on this machine (.cache/wheels)")
    env = _bench_env(second_engine)
    argv = [
        sys.executable, "-m", "pytest", "bench/", "-p", "no:xdist", "-p", "no:cacheprovider", "-q",
        "--bench-iterations", "2", "--bench-warmup", "0", "--bench-report-dir", str(tmp_path / "reports"),
        # The absolute gate's limits are for an idle machine; this test is about where things run.
        "-o", "bench_gate=", "-k", SELECTION,
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the harness cleans up like on Ctrl-C
        output, _ = proc.communicate(timeout=120)
        pytest.fail(f"the run did not finish within {RUN_TIMEOUT_S} s:\n{output[-3000:]}")
    elapsed = time.monotonic() - started
    print(f"run against the second engine took {elapsed:.0f} s")
    for samples in (tmp_path / "reports").glob("*/samples.csv"):
        if not samples.parent.is_symlink():  # reports/latest points at the run directory
            print(samples.read_text())
    assert proc.returncode == 0, output[-4000:]
    assert "2 passed" in output, output[-2000:]

    remote = docker.DockerClient(base_url=second_engine.docker_host, timeout=60)
    try:
        images = [t for i in remote.images.list() for t in i.tags if t.startswith("coldstart-bench/")]
        assert any(t.startswith("coldstart-bench/function:") for t in images), images
        assert _labelled(remote) == [], "left on the second engine"
    finally:
        remote.close()
    assert _labelled(docker_client, proc.pid) == [], "left on the shared engine"
    summary = next((tmp_path / "reports").glob("*/summary.json"))
    assert '"socket"' in summary.read_text() and '"direct"' in summary.read_text()
