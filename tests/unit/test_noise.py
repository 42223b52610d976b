from __future__ import annotations

from synthetic_samples import scenario_samples

from coldstart_bench.analyse.noise import environment_warnings, noise_warnings, percentile_warnings, scenario_warnings


def test_cpu_contention() -> None:
    assert environment_warnings({"cpu_count": 2, "loadavg_start": 1.5, "loadavg_end": 1.9, "steal_pct": 0.5}) == []
    out = environment_warnings({"cpu_count": 2, "loadavg_start": 3.5, "loadavg_end": "n/a", "steal_pct": 12})
    assert len(out) == 2
    assert "load average 3.50 at the start" in out[0] and "rule: load > CPU count" in out[0]
    assert "12.0% steal" in out[1] and "rule: steal > 5%" in out[1]
    assert environment_warnings({}) == []


def test_percentile_rule() -> None:
    out = percentile_warnings({"socket": 19, "direct": 40, "big": 150, "none": 0})
    assert out[0].startswith("too few samples for p95 (rule: p95 needs >= 20") and "socket (n=19)" in out[0]
    assert "direct" not in out[0]
    assert "p99 needs >= 100" in out[1] and "socket (n=19), direct (n=40)" in out[1] and "big" not in out[1]


def test_steady_run_has_no_scenario_warnings() -> None:
    assert (
        scenario_warnings("socket", scenario_samples("socket", 40, 260, 338, sigma_connect=0.1, sigma_life=0.02)) == []
    )


def test_failed_samples_are_reported() -> None:
    samples = scenario_samples("direct", 20, 951, 353, sigma_connect=0.1, sigma_life=0.02)
    samples[3].ok, samples[3].error = False, "echo mismatch"
    out = scenario_warnings("direct", samples)
    assert out == ["direct: 1 of 20 cold starts failed and are excluded from the statistics (e.g. 'echo mismatch')"]


def test_unstable_run_and_extreme_outliers() -> None:
    samples = scenario_samples("direct", 30, 951, 353, sigma_connect=0.1, sigma_life=0.3, seed=4)
    samples[5].connect_us = 1e6
    out = " | ".join(scenario_warnings("direct", samples))
    assert "direct lifecycle_ms: stdev is" in out and "rule: > 10%" in out
    assert "direct connect_us: 1 extreme outlier(s) beyond 3×IQR" in out


def test_drift_between_halves() -> None:
    samples = scenario_samples("socket", 40, 260, 338, sigma_connect=0.1, sigma_life=0.01)
    for s in samples[20:]:
        s.lifecycle_ms *= 1.05
    out = scenario_warnings("socket", samples)
    assert any(w.startswith("socket lifecycle_ms: drift") and "Mann–Whitney p=" in w for w in out)


def test_noise_warnings_combines_everything() -> None:
    samples = scenario_samples("socket", 10, 260, 338, sigma_connect=0.1, sigma_life=0.01)
    out = noise_warnings(samples, {"cpu_count": 1, "loadavg_end": 2.0})
    assert out[0].startswith("CPU contention") and any("p95 needs >= 20" in w for w in out)


def _in_blocks(samples: list, size: int) -> list:  # type: ignore[type-arg]
    for i, s in enumerate(samples):
        s.block = i // size
    return samples


def test_a_block_much_slower_than_the_scenarios_others_is_named() -> None:
    samples = _in_blocks(scenario_samples("direct-aa", 15, 951, 600, sigma_connect=0.1, sigma_life=0.03, seed=2), 5)
    for s in samples[5:10]:  # block 1: the machine was busy
        s.lifecycle_ms *= 1.9
    out = noise_warnings(samples, {})
    flagged = [w for w in out if "block" in w and "disturbed" in w]
    assert len(flagged) == 1, out
    assert flagged[0].startswith("direct-aa lifecycle_ms: block 1 has median") and "rule: >= 1.5×" in flagged[0]


def test_steady_blocks_a_fast_block_and_a_sequential_run_are_not_flagged() -> None:
    steady = _in_blocks(scenario_samples("direct", 15, 951, 600, sigma_connect=0.1, sigma_life=0.03, seed=3), 5)
    assert not [w for w in noise_warnings(steady, {}) if "disturbed" in w]
    fast = _in_blocks(scenario_samples("direct", 10, 951, 600, sigma_connect=0.1, sigma_life=0.03, seed=3), 5)
    for s in fast[:5]:
        s.lifecycle_ms *= 0.6  # a block faster than the other is no disturbance; the other is 1/0.6 = 1.67× it
    flagged = [w for w in noise_warnings(fast, {}) if "disturbed" in w]
    assert len(flagged) == 1 and "block 1 has median" in flagged[0]
    sequential = scenario_samples("direct", 15, 951, 600, sigma_connect=0.1, sigma_life=0.5, seed=3)
    assert all(s.block == 0 for s in sequential)
    assert not [w for w in noise_warnings(sequential, {}) if "disturbed" in w]
