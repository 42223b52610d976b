"""A scenario file end to end: `pytest bench/ --bench-scenarios examples/redis/scenarios.toml`
in a subprocess on the real engine (Redis started by the harness, direct and injected RESP
functions), then the stored run analysed again: `report` rewrites the same files and `compare`
against the committed baseline gives the run's own gate verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.samples import read_samples_csv

from .test_bench_e2e import clean_env, cold_starts, leftovers, run_bench

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REDIS = "examples/redis/scenarios.toml"
# The Redis scenarios (by -k on their ids) and the baseline's socket scenario, for compare. Exactly
# socket: "socket" alone also selects socket-fd3 (which pulls in direct), node-, c-, tls-socket, ...
SELECT = "redis or " + cold_starts("socket")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "coldstart_bench", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=clean_env(), timeout=300)


@pytest.fixture(scope="module")
def redis_run(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int, int]:
    reports = tmp_path_factory.mktemp("reports")
    code, out, pid = run_bench(
        reports,
        "--bench-scenarios", REDIS, "--bench-iterations", "3", "--bench-warmup", "1",
        "-k", SELECT, "--bench-baseline", "reports/baseline", "--bench-max-regression", "50%",
        timeout=600,
    )  # fmt: skip
    return (reports / "latest").resolve(), out, code, pid


def test_redis_scenarios_are_measured_and_verified(redis_run: tuple[Path, str, int, int], docker_client: Any) -> None:
    run_dir, out, code, pid = redis_run
    summary = json.loads((run_dir / "summary.json").read_text())
    gate_failed = any(not g["passed"] for g in summary["gate"])
    assert code == (1 if gate_failed else 0), out[-4000:]
    assert "4 passed" in out, out[-4000:]
    scenarios = summary["scenarios"]
    assert set(scenarios) == {"socket", "redis-direct", "redis-socket", "redis-socket-nonet"}
    for sid in ("redis-direct", "redis-socket", "redis-socket-nonet"):
        entry = scenarios[sid]
        assert entry["n"] == 3 and entry["ok"] == 3 and entry["failed"] == 0, entry
        assert entry["declared"]["family"] == "user" and entry["declared"]["backend"] == "user:redis"
    assert scenarios["redis-direct"]["paths"] == {"direct": 3}
    assert scenarios["redis-socket"]["paths"] == {"socket": 3}
    assert scenarios["redis-socket-nonet"]["interfaces"] == {"lo": 3}
    samples = [s for s in read_samples_csv(run_dir / "samples.csv") if s.scenario.startswith("redis")]
    assert all(s.connect_us > 0 and s.request_rtt_us > 0 and s.lifecycle_ms > 0 for s in samples)
    assert len({s.container_id for s in samples}) == len(samples)
    blocks = [b for b in summary["plan"]["order"] if b[1].startswith("redis")]
    assert blocks, "user scenarios are interleaved with the built-in ones"
    pairs = {(c["a"], c["b"]) for c in summary["comparisons"]}
    assert ("redis-socket", "redis-direct") in pairs and ("redis-socket-nonet", "redis-direct") in pairs
    assert leftovers(docker_client, pid) == []


def test_compare_with_the_baseline_reproduces_the_gate(redis_run: tuple[Path, str, int, int]) -> None:
    run_dir = redis_run[0]
    gate = [g for g in json.loads((run_dir / "summary.json").read_text())["gate"] if g["kind"] == "baseline"]
    assert {g["scenario"] for g in gate} == {"socket"}
    result = cli("compare", "reports/baseline", str(run_dir))
    lines = result.stdout.splitlines()
    assert result.returncode == (1 if any(not g["passed"] for g in gate) else 0), result.stdout + result.stderr
    assert lines[1 : 1 + len(gate)] == [g["line"] for g in gate]
    [only_run] = [line for line in lines if line.startswith("not in the baseline, not compared: ")]
    assert set(only_run.split(": ")[1].split(", ")) == {"redis-direct", "redis-socket", "redis-socket-nonet"}


def test_report_rewrites_the_same_files(redis_run: tuple[Path, str, int, int], tmp_path: Path) -> None:
    run_dir = redis_run[0]
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    result = cli("report", str(run_dir))
    assert result.returncode == 0, result.stderr
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after.keys() == before.keys()
    assert [name for name in before if before[name] != after[name]] == []
    shown = cli("show", "-v", str(run_dir))
    assert shown.returncode == 0 and any(line.startswith("redis-socket-nonet ") for line in shown.stdout.splitlines())
