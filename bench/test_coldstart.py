"""The thesis's experiment and what goes beyond it: every round is one fresh function container.

Run: `pytest bench/` (one scenario: `pytest bench/ -k "test_cold_start and socket-nonet"`).
The scenarios, what each is compared with, and the thesis's claims about them (as expectations)
come from the catalogue (coldstart_bench/catalogue.py). By default a failed expectation only
reports; `--bench-expectations=fail` makes it fail the run.
"""

from __future__ import annotations

from coldstart_bench.harness import Harness


def test_cold_start(catalogue_scenario_id: str, coldstart: Harness, benchmark: object) -> None:
    """One scenario of the catalogue, one cold start per round."""
    samples = coldstart.run(catalogue_scenario_id, benchmark)
    assert samples, f"{catalogue_scenario_id}: no cold start was measured"


def test_burst(burst_scenario_id: str, coldstart: Harness, benchmark: object) -> None:
    """The concurrency sweep (thesis Fig. 2): N cold starts started at once."""
    samples = coldstart.run(burst_scenario_id, benchmark)
    assert samples, f"{burst_scenario_id}: no cold start was measured"
