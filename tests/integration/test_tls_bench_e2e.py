"""The TLS family end to end: `pytest bench/ -k "tls and not pg"` in a subprocess, real engine, a
per-run CA and TLS echo backend, the pool manager's tls pool. Checks behaviour, not performance:
one backend TLS session per cold start, every injected sample continued the session, no key left
behind or written into the run's files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.samples import read_samples_csv

from .test_bench_e2e import leftovers, plan_warmups, run_bench

pytestmark = pytest.mark.integration

TLS_IDS = {"tls-direct", "tls-socket", "tls-socket-nonet", "tls-relay", "tls-relay-nonet", "tls-direct-10ms"}
INJECTED = {"tls-socket", "tls-socket-nonet", "tls-relay", "tls-relay-nonet"}
PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def test_tls_family_counts_one_backend_session_per_cold_start(docker_client: Any, tmp_path: Path) -> None:
    code, out, pid = run_bench(
        tmp_path, "--bench-iterations", "3", "--bench-warmup", "1", "--bench-block-warmup", "0",
        "-k", "test_cold_start and tls and not pg", timeout=600,
    )  # fmt: skip
    assert code == 0, out[-4000:]
    run_dir = (tmp_path / "latest").resolve()
    samples = read_samples_csv(run_dir / "samples.csv")
    assert {s.scenario for s in samples} == TLS_IDS
    assert all(s.ok and s.tls_version == "TLSv1.3" for s in samples)
    for s in samples:
        want = "handshake" if s.mode == "direct" else "relay" if "relay" in s.scenario else "record_layer"
        assert s.tls_path == want  # no kernel TLS here
        assert s.handoff == ("relay" if "relay" in s.scenario else "fd" if s.mode == "socket" else s.handoff)
        if s.mode == "socket":
            assert s.tls_server_seq >= 0 and s.tls_setup_us > 0 and s.request_rtt_us > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    counted = summary["environment"]["tls_sessions_checked"]
    assert counted["holds"] is True
    per_scenario = plan_warmups(summary)
    warmups = sum(per_scenario.values())
    socket_warmups = sum(w for sid, w in per_scenario.items() if sid in INJECTED)
    assert counted["tls_cold_starts"] == len(samples) + warmups
    assert counted["manager_handed_out"] == counted["socket_cold_starts_served"] == len(INJECTED) * 3 + socket_warmups
    assert counted["backend_sessions"] == counted["direct_handshakes"] + counted["manager_opened"]
    table1 = summary["tls"]["table1"]
    assert table1["tls13_connect_us"]["n"] == 3 and table1["tcp_connect_us"]["n"] == 3
    assert table1["tls13_connect_us"]["mean"] > table1["tcp_connect_us"]["mean"]
    # No private key in anything the run wrote, and nothing of the run left behind.
    for path in run_dir.iterdir():
        if path.suffix in (".csv", ".json", ".md", ".html"):
            assert not PEM_KEY.search(path.read_text(errors="replace")), path.name
    assert not PEM_KEY.search(out)
    assert "TLS 1.3 (thesis Table 1 re-measured)" in (run_dir / "report.md").read_text()
    assert leftovers(docker_client, pid) == []
    run_tag = summary["environment"]["run_id"][-8:]
    assert list(Path("/tmp").glob(f"csb-{run_tag}-tls-*")) == []  # the run's CA and server key are gone
