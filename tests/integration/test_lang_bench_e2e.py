"""The language and PgBouncer families through `pytest bench/` on the real engine: one Node.js arm
(injected through the fd-3 entrypoint) and one PgBouncer arm, each pulling in what it is compared
with. Two cold starts each: this checks the wiring, not performance (about a minute)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.samples import read_samples_csv

from .test_bench_e2e import leftovers, plan_warmups, run_bench

pytestmark = pytest.mark.integration


def test_node_and_pgbouncer_arms_end_to_end(docker_client: Any, tmp_path: Path) -> None:
    code, out, pid = run_bench(
        tmp_path,
        "--bench-iterations", "2", "--bench-warmup", "0",
        "-k", "test_cold_start and (node-socket and not nonet or pgbouncer-unix)",
        timeout=600,
    )  # fmt: skip
    assert code == 0, out[-4000:]
    assert "2 passed" in out, out[-2000:]  # node-socket, pg-pgbouncer-unix; the pulled-in arms have no test
    run_dir = (tmp_path / "latest").resolve()
    samples = read_samples_csv(run_dir / "samples.csv")
    by: dict[str, list[Any]] = {}
    for s in samples:
        by.setdefault(s.scenario, []).append(s)
    assert set(by) == {"node-socket", "node-direct", "pg-pgbouncer-unix", "pg-direct", "pg-socket"}
    assert all(s.ok and s.path == "fd3" and s.language_runtime.startswith("node") for s in by["node-socket"])
    assert all(s.runtime_startup_us > 0 for s in by["node-socket"])
    # One clock origin and the same phases in every arm, kept in samples.csv.
    for s in samples:
        assert s.t_entry_ns <= s.t_main_ns <= s.t_connected_ns <= s.t_first_reply_ns <= s.t_end_ns, s
        parts = s.acquire_us + s.verify_us + s.session_setup_us
        assert s.connect_us == pytest.approx(parts, abs=1.0) and s.library_load_us >= 0, s
        assert s.runtime_start_us > 0 and s.time_to_first_reply_us > s.connect_us, s
    assert all(s.path == "direct" for s in by["node-direct"])
    assert all(s.interfaces == "lo" and s.query_p50_us > 0 for s in by["pg-pgbouncer-unix"])

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["plan"]["pulled"] == ["node-direct", "pg-direct", "pg-socket"]
    (node,) = [r for r in summary["languages"] if r["scenario"] == "node-socket"]
    assert node["direct"] == "node-direct" and node["connect_speedup"] > 1
    arms = {r["scenario"]: r for r in summary["pg_proxy"]}
    assert set(arms) == {"pg-pgbouncer-unix", "pg-direct", "pg-socket"}
    warmups = plan_warmups(summary)
    for sid, r in arms.items():  # the ledger counts every cold start of the arm's blocks, warm-ups included
        assert r["query_p50_us"], r
        assert r["cold_starts_counted"] == 2 + warmups[sid], (sid, r, warmups)
    direct = arms["pg-direct"]
    assert direct["server_sessions"] == direct["cold_starts_counted"]  # every direct cold start is a new session
    assert arms["pg-pgbouncer-unix"]["server_sessions"] <= 1  # PgBouncer reuses its server connection
    report = (run_dir / "report.md").read_text()
    assert "## Languages: direct vs injected connection" in report
    assert "## PostgreSQL: direct, PgBouncer, injected session" in report
    assert leftovers(docker_client, pid) == []
