from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats as sps

from coldstart_bench.analyse.familywise import paired_intervals_batch, shift_intervals_batch
from coldstart_bench.analyse.sample_size import (
    MAX_PLANNED,
    blocks_for_precision,
    blocks_needed,
    cold_starts_per_arm,
    connection_saving_ms,
    plan_adjusted,
    plan_paired,
    plan_two_sample,
)
from coldstart_bench.analyse.sequential import boundary, confidence_sequence_path, rho2_for


def test_textbook_sample_size() -> None:
    # Effect of one SD, 80 % power, alpha 0.05: (1.960 + 0.842)² · 2 = 15.7 -> 16 per arm.
    assert cold_starts_per_arm(1.0, 1.0, 1.0, alpha=0.05, power=0.8) == 16
    # Scale invariance and the d² law: half the difference, four times the cold starts.
    assert cold_starts_per_arm(5.0, 5.0, 5.0, alpha=0.05, power=0.8) == 16
    assert cold_starts_per_arm(0.5, 1.0, 1.0, alpha=0.05, power=0.8) == 63
    assert blocks_needed(1.0, 1.0, alpha=0.05, power=0.8) == 8


def test_the_issues_example_needs_thousands_of_lifecycles() -> None:
    # A 3.7 ms saving against a lifecycle SD of 50 ms, at a family-wise alpha of 0.05/20.
    n_life = cold_starts_per_arm(3.7, 50.0, 50.0, alpha=0.05 / 20, power=0.8)
    n_run = cold_starts_per_arm(3.7, 18.0, 18.0, alpha=0.05 / 20, power=0.8)
    assert 4000 < n_life < 6000
    assert n_run == pytest.approx(n_life * (18 / 50) ** 2, rel=0.01)


@pytest.mark.parametrize(
    ("args", "match"),
    [((0.0, 1.0, 1.0), "non-zero"), ((1.0, -1.0, 1.0), "standard deviations"), ((1.0, math.nan, 1.0), "finite")],
)
def test_bad_inputs(args: tuple[float, float, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cold_starts_per_arm(*args, alpha=0.05, power=0.8)


def test_bad_levels() -> None:
    with pytest.raises(ValueError, match="alpha"):
        blocks_needed(1.0, 1.0, alpha=1.0, power=0.8)
    with pytest.raises(ValueError, match="power"):
        blocks_needed(1.0, 1.0, alpha=0.05, power=0.0)
    with pytest.raises(ValueError, match="two values"):
        plan_two_sample([1.0], [1.0, 2.0], 1.0, metric="lifecycle_ms")
    with pytest.raises(ValueError, match="in a block must be at least 1"):
        plan_paired([1.0, 2.0], 1.0, metric="lifecycle_ms", per_block=0)


def test_planning_never_states_more_than_ten_million_and_keeps_the_sign() -> None:
    """The run that printed 17,166,474,112 cold starts per arm for a saving of 0.00 ms: no count above
    10^7, "no effect to resolve" instead; a negative saving is planned as a cost, never as a saving."""
    rng = np.random.default_rng(2)
    direct, socket = rng.normal(450, 50, 60), rng.normal(450, 50, 60)
    for difference in (0.0, 1e-3, -1e-3, 0.004):
        plan = plan_two_sample(direct, socket, difference, metric="lifecycle_ms", alpha=0.05 / 8)
        assert plan.cold_starts_per_arm is None and plan.no_effect_to_resolve and not plan.resolved_by_this_run
        assert plan.sentence().startswith("No effect to resolve") and "10^7" in plan.sentence()
        assert plan.to_dict()["cold_starts_per_arm"] is None
        paired = plan_paired(rng.normal(0, 20, 12), difference, metric="lifecycle_ms", per_block=5)
        assert paired.cold_starts_per_arm is None and paired.blocks is None
        adjusted = plan_adjusted(6.0, difference, metric="lifecycle_ms", cold_starts_per_arm_run=60)
        assert adjusted.cold_starts_per_arm is None
    for difference in np.geomspace(1e-3, 1e3, 61):
        for signed in (difference, -difference):
            plan = plan_two_sample(direct, socket, float(signed), metric="lifecycle_ms", alpha=0.05 / 20)
            assert plan.cold_starts_per_arm is None or plan.cold_starts_per_arm <= MAX_PLANNED
            assert plan.cold_starts_per_arm_rank_bound is None or plan.cold_starts_per_arm_rank_bound <= MAX_PLANNED
            numbers = [int(x) for x in re.findall(r"\d+", plan.sentence().replace(",", ""))]
            assert max(numbers) <= MAX_PLANNED
    cost = plan_two_sample(direct, socket, -30.0, metric="lifecycle_ms")
    assert cost.difference == -30.0 and "a cost of 30.00 ms" in cost.sentence() and "saving" not in cost.sentence()
    adjusted = plan_adjusted(6.0, 3.0, metric="lifecycle_ms", cold_starts_per_arm_run=60, alpha=0.05 / 8)
    assert adjusted.cold_starts_per_arm == cold_starts_per_arm(3.0, 6.0, 6.0, alpha=0.05 / 8, power=0.8)
    assert "residual SD of the adjusted fit 6.0 ms" in adjusted.sentence()


def test_connection_saving_in_ms() -> None:
    assert connection_saving_ms([4500.0, 4400.0, 4600.0], [800.0, 700.0, 900.0]) == pytest.approx(3.7)
    assert math.isnan(connection_saving_ms([], [1.0]))


def test_plan_from_the_runs_own_samples() -> None:
    rng = np.random.default_rng(1)
    direct, socket = rng.normal(450, 50, 200), rng.normal(446, 50, 200)
    plan = plan_two_sample(direct, socket, 3.7, metric="lifecycle_ms", alpha=0.05 / 20)
    sd_a, sd_b = np.std(direct, ddof=1), np.std(socket, ddof=1)
    assert plan.cold_starts_per_arm == cold_starts_per_arm(3.7, sd_a, sd_b, alpha=0.05 / 20, power=0.8)
    assert plan.cold_starts_per_arm_rank_bound == math.ceil(plan.cold_starts_per_arm / 0.864)
    assert not plan.resolved_by_this_run
    text = plan.sentence()
    assert "a saving of 3.70 ms (the difference in median connect time) on lifecycle_ms" in text and "80% power" in text
    assert f"about {plan.cold_starts_per_arm} cold starts per arm" in text and "this run had 200 per arm" in text
    assert plan.to_dict()["sentence"] == text

    blocks = plan_paired(rng.normal(-3.7, 20, 40), 3.7, metric="start_to_die_ms", per_block=5, alpha=0.01)
    assert blocks.blocks is not None and blocks.cold_starts_per_arm == blocks.blocks * 5
    assert "blocks)" in blocks.sentence() and "per-block difference SD" in blocks.sentence()


def test_planned_sizes_reach_the_power_by_simulation() -> None:
    """At the planned n, 3000 seeded runs reject in about 80 % (z test exactly; the rank-based
    family-wise intervals a little less for normal data, their efficiency being 0.955)."""
    rng = np.random.default_rng(2026)
    alpha, power, d, sd = 0.05 / 4, 0.8, 5.0, 10.0
    n = cold_starts_per_arm(d, sd, sd, alpha=alpha, power=power)
    a = rng.normal(d, sd, (3000, n))
    b = rng.normal(0.0, sd, (3000, n))
    z = (a.mean(axis=1) - b.mean(axis=1)) / math.sqrt(2 * sd**2 / n)
    assert float(np.mean(np.abs(z) > sps.norm.ppf(1 - alpha / 2))) == pytest.approx(power, abs=0.03)
    lo, _hi = shift_intervals_batch(a[:1000], b[:1000], 1 - alpha)
    assert 0.70 < float(np.mean(lo > 0)) <= power + 0.03

    blocks = blocks_needed(d, sd, alpha=alpha, power=power)
    diffs = rng.normal(d, sd, (3000, blocks))
    lo, _hi = paired_intervals_batch(diffs, 1 - alpha)
    assert 0.70 < float(np.mean(lo > 0)) <= power + 0.05


def test_blocks_for_precision_is_the_first_block_within_it() -> None:
    alpha, t_star = 0.025, 100
    t = blocks_for_precision(30.0, 10.0, alpha=alpha, target_blocks=t_star)
    assert t is not None
    rho2 = rho2_for(t_star, alpha)
    assert 30.0 * float(boundary(t, rho2, alpha)) <= 10.0 < 30.0 * float(boundary(t - 1, rho2, alpha))
    assert blocks_for_precision(30.0, 1e-6, max_blocks=1000) is None
    assert blocks_for_precision(0.0, 1.0) == 2
    with pytest.raises(ValueError, match="precision"):
        blocks_for_precision(1.0, 0.0)
    # Simulated streams with that spread reach the precision around the planned block.
    x = np.random.default_rng(3).normal(0, 30.0, (500, 3 * t))
    _mean, half = confidence_sequence_path(x, alpha, rho2)
    first = (half <= 10.0).argmax(axis=1) + 1
    assert abs(np.median(first) - t) <= 0.1 * t
