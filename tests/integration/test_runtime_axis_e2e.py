"""The runtime axis end to end, small: `pytest bench/ --bench-runtimes runc,runsc` on the real engine.
On runsc the injected TCP fd is dropped (reported unsupported, with the probe's reason) and the relay
carries echo-verified requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.measure.runtimes import engine_runtimes, missing_runtime_message
from coldstart_bench.samples import read_samples_csv
from tests.integration.test_bench_e2e import leftovers, run_bench

pytestmark = pytest.mark.integration

# socket-nonet and socket-relay-nonet, each on runc and on runsc: "[id" matches "[id]" and "[id@runsc]"
# (-k cannot spell "@"), not node-socket-nonet, c-socket-nonet, tls-socket-nonet or pg-socket-nonet.
SELECT = "test_cold_start[socket-nonet or test_cold_start[socket-relay-nonet"


def test_runsc_injection_unsupported_relay_measured(docker_client: Any, tmp_path: Path) -> None:
    offered = engine_runtimes(docker_client)
    if "runsc" not in offered:
        pytest.skip(missing_runtime_message("runsc", offered))
    code, out, pid = run_bench(
        tmp_path, "--bench-iterations", "2", "--bench-warmup", "0", "--bench-runtimes", "runc,runsc",
        "-rs", "-k", SELECT, timeout=300,
    )  # fmt: skip
    assert code == 0, out[-3000:]
    summary = json.loads((tmp_path / "latest" / "summary.json").read_text())
    probe = summary["environment"]["runtime_probes"]["runsc"]
    # A probe that did not finish (say, timed out on a loaded machine) marks the relay unsupported too.
    assert probe["runs"] and probe["unix_fd"]["works"], f"the runsc probe did not complete: {probe}"
    assert [u["scenario"] for u in summary["unsupported"]] == ["socket-nonet@runsc"], summary["unsupported"]
    (unsupported,) = summary["unsupported"]
    assert probe["tcp_fd"]["reason"] and probe["tcp_fd"]["reason"] in unsupported["reason"]
    assert "socket-nonet@runsc: unsupported on runtime runsc" in out  # pytest shows it as a skip with the reason
    assert "socket-nonet@runsc" not in summary["scenarios"]
    relay = summary["scenarios"]["socket-relay-nonet@runsc"]
    assert relay["ok"] == relay["n"] == 2 and relay["paths"] == {"socket": 2}
    samples = [s for s in read_samples_csv(tmp_path / "latest" / "samples.csv") if s.scenario.endswith("@runsc")]
    assert samples and all(s.ok and s.handoff == "relay" and s.request_rtts_us for s in samples)
    assert summary["environment"]["relay_stats"]["started"] >= 2
    assert leftovers(docker_client, pid) == []
