"""PostgreSQL over TLS and a backend at a network distance, through `pytest bench/` on the real
engine: the database container with ssl = on, the direct arm (SSLRequest, TLS 1.3 with
verification, startup, SCRAM in the function), the injected arms (record layer, relay), each
again with a round-trip time on every packet. Two cold starts each: wiring, not performance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.samples import read_samples_csv

from .test_bench_e2e import leftovers, plan_warmups, run_bench

pytestmark = pytest.mark.integration

ARMS = {"pg-tls-direct": "handshake", "pg-tls-socket": "record_layer", "pg-tls-relay": "relay"}
RTT_MS = 50  # large beside the noise of a loaded machine: direct adds ~6 of them, injected none


def test_pg_over_tls_arms_and_their_rtt_variants(docker_client: Any, tmp_path: Path) -> None:
    code, out, pid = run_bench(
        tmp_path, "--bench-iterations", "2", "--bench-warmup", "1", "--bench-block-warmup", "0",
        "--bench-rtt", f"{RTT_MS}ms", "-k", "test_cold_start and pg-tls", timeout=900,
    )  # fmt: skip
    assert code == 0, out[-4000:]
    run_dir = (tmp_path / "latest").resolve()
    samples = read_samples_csv(run_dir / "samples.csv")
    expected = set(ARMS) | {f"{arm}-rtt-{RTT_MS}ms" for arm in ARMS}
    assert {s.scenario for s in samples} == expected
    for s in samples:
        arm = s.scenario.split("-rtt-")[0]
        assert s.ok and s.tls_version == "TLSv1.3" and s.tls_path == ARMS[arm], s
        assert s.handoff == ("relay" if arm == "pg-tls-relay" else "fd" if s.mode == "socket" else s.handoff)
    summary = json.loads((run_dir / "summary.json").read_text())
    env = summary["environment"]
    warmups = plan_warmups(summary)
    assert env["pg_transfers_checked"] == len(samples) + sum(warmups.values())  # one committed transfer each
    sessions = env["pg_sessions_by_scenario"]
    direct = sessions["pg-tls-direct"]
    assert direct["sessions"] == direct["cold_starts"] == 2 + warmups["pg-tls-direct"]
    rows = {r["scenario"]: r for r in summary["round_trips"]}
    assert set(rows) == {f"{arm}-rtt-{RTT_MS}ms" for arm in ARMS}
    # TCP, SSLRequest, TLS, startup and SCRAM each cross the distance; an injected connect does not
    # (what it costs locally can still round to a round trip on a loaded machine: compare the growth).
    assert rows[f"pg-tls-direct-rtt-{RTT_MS}ms"]["round_trips"] >= 4
    assert rows[f"pg-tls-direct-rtt-{RTT_MS}ms"]["added_round_trips"] >= 4
    for arm in ("pg-tls-socket", "pg-tls-relay"):
        assert rows[f"{arm}-rtt-{RTT_MS}ms"]["added_round_trips"] < 1, rows
    assert "network distance" in (run_dir / "report.md").read_text()
    assert leftovers(docker_client, pid) == []
