"""The benchmark end to end, as a user runs it: `pytest bench/` in a subprocess, real engine,
real containers. Small iteration counts: these check behaviour, not performance."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.samples import read_samples_csv

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def cold_starts(*scenario_ids: str) -> str:
    """A `-k` expression selecting exactly these scenarios' tests. Substrings such as "socket" or
    "direct" also match the language, TLS, relay and PostgreSQL families (and what they pull in)."""
    return " or ".join(f"test_cold_start[{sid}]" for sid in scenario_ids)


# The thesis campaign with its extended scenarios and the A/A control (no pg, return, TLS, languages, relay).
THESIS_RUN = ("socket", "direct", "direct-10ms", "direct-50ms", "direct-100ms", "socket-nonet", "socket-100ms",
              "fallback", "direct-aa")  # fmt: skip


def clean_env() -> dict[str, str]:
    """The benchmark runs as a user starts it: not as an xdist worker (which would switch
    pytest-benchmark off), whatever runs this test."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}


def run_bench(report_dir: Path, *args: str, timeout: float = 900) -> tuple[int, str, int]:
    """(exit code, output, pid): the pid labels everything that run created."""
    cmd = [sys.executable, "-m", "pytest", "bench/", "-p", "no:xdist", "-p", "no:cacheprovider",
           "--bench-report-dir", str(report_dir), *args]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, proc.pid


def leftovers(client: Any, pid: int) -> list[str]:
    """Containers and networks a run (by its process id) created and did not remove."""
    label = f"coldstart-bench.pid={pid}"
    names = [c.name for c in client.containers.list(all=True, filters={"label": label})]
    names += [n.name for n in client.networks.list(filters={"label": label})]
    return names


def plan_warmups(summary: dict[str, Any]) -> Counter[str]:
    """Discarded warm-up cold starts per scenario: which blocks open with them is the plan's
    decision (--bench-warmup-after), recorded in summary.json."""
    plan, out = summary["plan"], Counter[str]()
    for (_, scenario, _), warmups in zip(plan["order"], plan["warmups"], strict=True):
        out[scenario] += warmups
    return out


@pytest.fixture(scope="module")
def thesis_run(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int, int]:
    reports = tmp_path_factory.mktemp("reports")
    code, out, pid = run_bench(
        reports,
        "--bench-iterations", "4", "--bench-warmup", "1",
        "-k", cold_starts(*THESIS_RUN),
        f"--benchmark-json={reports / 'benchmark.json'}",
    )  # fmt: skip
    return reports, out, code, pid


def test_thesis_run_passes_and_writes_the_report(thesis_run: tuple[Path, str, int, int]) -> None:
    reports, out, code, _ = thesis_run
    assert code == 0, out[-4000:]
    run_dir = (reports / "latest").resolve()
    for name in ("samples.csv", "summary.json", "report.md"):
        assert (run_dir / name).is_file(), f"{name} missing in {run_dir}"
    samples = read_samples_csv(run_dir / "samples.csv")
    ids = {s.scenario for s in samples}
    assert {"socket", "direct", "direct-10ms", "direct-50ms", "direct-100ms", "socket-nonet",
            "socket-100ms", "fallback"} <= ids  # fmt: skip
    assert len({s.container_id for s in samples}) == len(samples)  # every cold start a distinct container
    summary = json.loads((run_dir / "summary.json").read_text())
    scen = summary["scenarios"]
    for sid in ids:
        for metric in ("connect_us", "lifecycle_ms"):
            assert {"n", "mean", "median", "p95", "p99", "variance"} <= set(scen[sid][metric])
    assert scen["socket"]["connect_us"]["median"] < scen["direct"]["connect_us"]["median"]
    for delay in (10, 50, 100):
        assert scen[f"direct-{delay}ms"]["connect_us"]["median"] >= delay * 1000
    env = summary["environment"]
    for key in (
        "kernel",
        "docker_server",
        "cgroup_version",
        "cpu_count",
        "python",
        "delay_backend",
        "base_image",
    ):
        assert env.get(key) not in (None, ""), key
    assert "GATE OK" in out
    assert "cold starts" in out  # live progress lines
    # Findings are judged as one family; the A/A control ran; nothing not significant claims a saving.
    findings = summary["findings"]
    assert findings and all({"significant", "p_adjusted", "ci_adjusted"} <= set(f) for f in findings)
    assert "direct-aa" in ids and any(f["kind"] == "control" for f in findings)
    claim = re.compile(r"\b(saves|costs|faster|slower|adds)\b")
    assert [f["text"] for f in findings if not f["significant"] and claim.search(f["text"])] == []


def test_nonet_and_fallback_samples_say_what_happened(thesis_run: tuple[Path, str, int, int]) -> None:
    reports, _out, _code, _ = thesis_run
    samples = read_samples_csv((reports / "latest").resolve() / "samples.csv")
    nonet = [s for s in samples if s.scenario == "socket-nonet"]
    assert nonet and all(s.interfaces == "lo" and s.path == "socket" for s in nonet)
    fallback = [s for s in samples if s.scenario == "fallback"]
    assert fallback and all(s.path == "fallback" for s in fallback)
    hidden = [s.connect_us for s in samples if s.scenario == "socket-100ms"]
    assert hidden and sorted(hidden)[len(hidden) // 2] < 10_000  # the pool hides the 100 ms handshake


def test_pytest_benchmark_sees_every_scenario(thesis_run: tuple[Path, str, int, int]) -> None:
    reports = thesis_run[0]
    data = json.loads((reports / "benchmark.json").read_text())
    by_scenario = {b["extra_info"]["scenario"]: b for b in data["benchmarks"]}
    assert {"socket", "direct", "direct-10ms", "direct-50ms", "direct-100ms"} <= set(by_scenario)
    samples = read_samples_csv((reports / "latest").resolve() / "samples.csv")
    direct = sorted(s.lifecycle_ms / 1000 for s in samples if s.scenario == "direct" and s.ok)
    stats = by_scenario["direct"]["stats"]
    assert stats["rounds"] == len(direct) == 4
    assert stats["min"] == pytest.approx(direct[0]) and stats["max"] == pytest.approx(direct[-1])


def test_nothing_left_behind(thesis_run: tuple[Path, str, int, int], docker_client: Any) -> None:
    assert leftovers(docker_client, thesis_run[3]) == []


def test_failing_gate_exits_non_zero_and_says_why(docker_client: Any, tmp_path: Path) -> None:
    code, out, pid = run_bench(
        tmp_path, "--bench-iterations", "3", "--bench-warmup", "0",
        "-k", cold_starts("socket"),
        "-o", "bench_gate=socket.connect_us.p50 <= 1",
    )  # fmt: skip
    assert code != 0, out[-3000:]
    gate_fail = [ln for ln in out.splitlines() if ln.startswith("GATE FAIL")]
    assert gate_fail and all(w in gate_fail[0] for w in ("socket", "connect_us", "p50")), out[-3000:]
    assert (tmp_path / "latest" / "samples.csv").is_file()  # data kept although the gate failed
    assert leftovers(docker_client, pid) == []


def test_ctrl_c_leaves_nothing_behind_and_keeps_samples(docker_client: Any, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pytest", "bench/", "-p", "no:xdist", "-p", "no:cacheprovider",
           "--bench-report-dir", str(tmp_path), "--bench-iterations", "200", "--bench-warmup", "0",
           "-k", cold_starts("direct"),
           ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    try:
        deadline = time.monotonic() + 600
        samples_csv = tmp_path / "latest" / "samples.csv"
        while time.monotonic() < deadline and proc.poll() is None:
            if samples_csv.exists() and len(samples_csv.read_text().splitlines()) >= 3:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert len(read_samples_csv(tmp_path / "latest" / "samples.csv")) >= 2
    assert leftovers(docker_client, proc.pid) == [], out[-2000:]
