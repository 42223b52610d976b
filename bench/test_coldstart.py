"""The thesis's experiment and what goes beyond it: every round is one fresh function container.

Run: `pytest bench/` (one scenario: `pytest bench/ -k "test_cold_start and socket-nonet"`).
The expectations below are the thesis's claims; by default they report, `--bench-expectations=fail`
makes them fail the run.
"""

from __future__ import annotations

import pytest

from coldstart_bench.catalogue import EXTENDED_SCENARIOS, PG_SCENARIOS, THESIS_SCENARIOS
from coldstart_bench.harness import Harness

SCENARIO_IDS = [s.id for s in THESIS_SCENARIOS + EXTENDED_SCENARIOS + PG_SCENARIOS]

THESIS_EXPECTATIONS = [
    # Section 6.1: injection connects several times faster (3.6x on AWS).
    "socket.connect_us.median <= direct.connect_us.median / 2",
    # Section 6.2: injected cold starts are more predictable (Levene p = 0.0055).
    "socket.lifecycle_ms.variance < direct.lifecycle_ms.variance (levene, alpha=0.05)",
    # Table 2: lifecycle grows with the handshake delay.
    "direct-50ms.lifecycle_ms.median > direct-10ms.lifecycle_ms.median (mannwhitney, alpha=0.05)",
    "direct-100ms.lifecycle_ms.median > direct-50ms.lifecycle_ms.median (mannwhitney, alpha=0.05)",
    # Beyond the thesis: the pool hides handshake delay; no container networking is cheaper.
    "socket-100ms.connect_us.median < direct-100ms.connect_us.median (mannwhitney, alpha=0.05)",
    "socket-nonet.lifecycle_ms.median < direct.lifecycle_ms.median (mannwhitney, alpha=0.05)",
    # The OLTP case: an injected, already authenticated session skips TCP, startup and SCRAM.
    "pg-socket.connect_us.median <= pg-direct.connect_us.median / 5",
]


@pytest.mark.parametrize("scenario_id", SCENARIO_IDS, ids=SCENARIO_IDS)
def test_cold_start(scenario_id: str, coldstart: Harness, benchmark: object) -> None:
    samples = coldstart.run(scenario_id, benchmark)
    assert samples, f"{scenario_id}: no cold start was measured"


for _text in THESIS_EXPECTATIONS:
    test_cold_start = pytest.mark.bench_expect(_text)(test_cold_start)


def test_burst(burst_scenario_id: str, coldstart: Harness, benchmark: object) -> None:
    """The concurrency sweep (thesis Fig. 2): N cold starts started at once."""
    samples = coldstart.run(burst_scenario_id, benchmark)
    assert samples, f"{burst_scenario_id}: no cold start was measured"
