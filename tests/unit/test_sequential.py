from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from coldstart_bench.analyse.sequential import (
    MAX_COLD_STARTS,
    MAX_TIME,
    PRECISION_REACHED,
    Look,
    StoppingRule,
    always_valid_p,
    boundary,
    confidence_sequence,
    confidence_sequence_path,
    headline_looks,
    parse_duration,
    parse_precision,
    parse_stopping_options,
    rho2_for,
)


@pytest.mark.parametrize(
    ("text", "value", "relative"),
    [
        ("2%", 0.02, True),
        ("0.5 %", 0.005, True),
        ("5ms", 5.0, False),
        ("5 ms", 5.0, False),
        ("500us", 0.5, False),
        ("500µs", 0.5, False),
        ("0.005s", 5.0, False),
        (".5ms", 0.5, False),
    ],
)
def test_parse_precision(text: str, value: float, relative: bool) -> None:
    p = parse_precision(text)
    assert p.value == pytest.approx(value) and p.relative is relative


@pytest.mark.parametrize("text", ["", "abc", "5", "5kg", "-5ms", "0ms", "0%", "100%", "5 % %", "nan%"])
def test_parse_precision_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="precision"):
        parse_precision(text)


def test_precision_target_in_the_comparisons_unit() -> None:
    assert parse_precision("5ms").target("us", None) == pytest.approx(5000.0)
    assert parse_precision("5ms").target("ms", 450.0) == 5.0
    assert parse_precision("2%").target("ms", 450.0) == pytest.approx(9.0)
    assert math.isnan(parse_precision("2%").target("ms", None))
    with pytest.raises(ValueError, match="unit"):
        parse_precision("5ms").target("parsecs", None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("600", 600), ("90s", 90), ("10m", 600), ("1.5h", 5400), ("1h30m", 5400), ("2m30s", 150), ("10M", 600)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "0", "0m", "1h1h", "m", "10 minutes", "-5m", "1h 30"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_stopping_options() -> None:
    opts = parse_stopping_options("5%", "10m")
    assert opts.precision is not None and opts.precision.relative and opts.max_time_s == 600
    assert parse_stopping_options(None, "10m").precision is None
    assert parse_stopping_options("5ms", None, max_cold_starts=4000).max_cold_starts == 4000
    with pytest.raises(ValueError, match="--bench-precision needs --bench-max-time"):
        parse_stopping_options("5ms", None)
    with pytest.raises(ValueError, match=r"^--bench-precision: precision must"):
        parse_stopping_options("fast", "10m")
    with pytest.raises(ValueError, match=r"^--bench-max-time: duration must"):
        parse_stopping_options("5ms", "soon")
    with pytest.raises(ValueError, match="cold-start budget"):
        parse_stopping_options("5ms", "1m", max_cold_starts=0)


def test_rho_minimises_the_boundary_at_the_target() -> None:
    for t_star, alpha in ((100, 0.05), (30, 0.01), (500, 0.05 / 3)):
        best = optimize.minimize_scalar(
            lambda r2, t=t_star, a=alpha: float(boundary(t, r2, a)), bounds=(1e-6, 10), method="bounded"
        )
        assert rho2_for(t_star, alpha) == pytest.approx(best.x, rel=1e-3)


def test_boundary_formula_by_hand() -> None:
    # t = 100, ρ² = 0.1, alpha = 0.05: sqrt(2·11/1000 · log(sqrt(11)/0.05)) = 0.3038
    assert float(boundary(100, 0.1, 0.05)) == pytest.approx(math.sqrt(22 / 1000 * math.log(math.sqrt(11) / 0.05)))
    # Wider than a fixed-n 95 % interval (1.96 SE), narrower than 3.1 SE at the target.
    per_se = float(boundary(100, rho2_for(100, 0.05), 0.05)) * 10
    assert 1.96 < per_se < 3.1


def test_point_and_path_agree() -> None:
    x = np.random.default_rng(1).normal(2, 3, 40)
    mean, half = confidence_sequence_path(x, 0.05, 0.1)
    assert (mean[-1], half[-1]) == pytest.approx(confidence_sequence(x, 0.05, 0.1))
    assert math.isinf(half[0]) and math.isinf(confidence_sequence(x[:1], 0.05, 0.1)[1])


def _block_differences(rng: np.random.Generator, runs: int, blocks: int, shift: float = 0.0) -> np.ndarray:
    """Per-block median(a) − median(b) of five skewed lifecycle-like cold starts per arm, with a
    per-block drift both arms share (it cancels, as in an interleaved run)."""

    def arm() -> np.ndarray:
        return rng.lognormal(6.0, 0.1, (runs, blocks, 5)) + rng.exponential(20.0, (runs, blocks, 5))

    drift = rng.normal(0.0, 30.0, (runs, blocks, 1))
    return np.median(arm() + shift + drift, axis=-1) - np.median(arm() + drift, axis=-1)


def test_aa_streams_claim_a_difference_at_any_look_at_most_alpha() -> None:
    """4000 seeded A/A streams of 300 blocks, looked at after every block from min_blocks on."""
    rng = np.random.default_rng(2026)
    rule = StoppingRule(parse_precision("1ms"), max_time_s=600)
    alpha = rule.alpha
    d = _block_differences(rng, 4000, 300)
    mean, half = confidence_sequence_path(d, alpha, rho2_for(rule.target_blocks, alpha))
    looks = slice(rule.min_blocks - 1, None)
    claims = np.abs(mean[:, looks]) > half[:, looks]
    assert float(np.mean(claims.any(axis=1))) <= alpha
    # The same looks with a fixed-n 95 % interval: the error the rule exists to avoid.
    t = np.arange(1, 301)
    sd = np.sqrt(np.maximum(np.cumsum(d * d, axis=1) - np.cumsum(d, axis=1) ** 2 / t, 0) / np.maximum(t - 1, 1))
    naive = np.abs(mean[:, looks]) > (1.96 * sd / np.sqrt(t))[:, looks]
    assert float(np.mean(naive.any(axis=1))) > 0.2


@pytest.mark.parametrize("shift", [0.0, 4.0])
def test_interval_at_the_stopping_time_covers_with_two_comparisons(shift: float) -> None:
    """Two headline comparisons per run, stopped when both half-widths are within 10 ms (or at 300
    blocks); both intervals at the stopping time cover the true mean in ≥ 1 − alpha of the runs."""
    rng = np.random.default_rng(7 + int(shift))
    runs, blocks, precision = 3000, 300, 10.0
    rule = StoppingRule(parse_precision(f"{precision}ms"), max_cold_starts=10**6)
    alpha_each = rule.alpha_each(2)
    rho2 = rho2_for(rule.target_blocks, alpha_each)
    d = np.stack([_block_differences(rng, runs, blocks, shift), _block_differences(rng, runs, blocks, -shift)])
    mean, half = confidence_sequence_path(d, alpha_each, rho2)
    half[:, :, : rule.min_blocks - 1] = np.inf
    ok = np.all(half <= precision, axis=0)  # (runs, blocks): both reached
    stop = np.where(ok.any(axis=1), ok.argmax(axis=1), blocks - 1)
    assert 30 < np.median(stop) < blocks - 1  # the rule really stops data-dependently
    idx = np.arange(runs)
    truth = np.array([shift, -shift])[:, None]
    covered = np.abs(mean[:, idx, stop] - truth) <= half[:, idx, stop]
    assert float(np.mean(covered.all(axis=0))) >= 1 - rule.alpha


def _looks(sd: float, blocks: int, seed: int = 3) -> dict[str, Look]:
    rng = np.random.default_rng(seed)
    return {
        "socket-direct lifecycle_ms": Look(rng.normal(-3, sd, blocks), 450.0, "ms"),
        "socket-direct connect_us": Look(rng.normal(-3700, 10 * sd, blocks), 4500.0, "us"),
    }


def test_rule_stops_when_every_comparison_reaches_the_precision() -> None:
    rule = StoppingRule(parse_precision("5%"), max_time_s=600)
    early = rule.update(_looks(sd=2.0, blocks=10), cold_starts=100, elapsed_s=30)
    assert not early.stop and early.reason is None
    assert all(math.isinf(c.half_width) and c.interval is None for c in early.comparisons.values())
    done = rule.update(_looks(sd=2.0, blocks=40), cold_starts=400, elapsed_s=60)
    assert done.stop and done.reason == PRECISION_REACHED
    assert sorted(done.reached) == sorted(done.comparisons)
    c = done.comparisons["socket-direct lifecycle_ms"]
    assert c.target == pytest.approx(22.5) and c.half_width <= c.target
    assert c.interval is not None and c.interval[0] < c.estimate < c.interval[1]
    record = rule.record()
    assert record["stop_reason"] == PRECISION_REACHED and record["looks"] == 2 and record["cold_starts"] == 400
    assert record["rule"]["precision"] == "5%" and record["rule"]["alpha_each"] == pytest.approx(0.025)
    assert set(record["reached"]) == set(done.comparisons)
    assert "±" in done.progress_text() and "stop: precision_reached" in done.progress_text()


def test_rule_needs_every_comparison() -> None:
    rule = StoppingRule(parse_precision("1ms"), max_time_s=600)
    looks = _looks(sd=2.0, blocks=40)  # lifecycle reaches 1 ms? no: its SD of 2 ms needs more blocks
    d = rule.update(looks, cold_starts=400, elapsed_s=10)
    assert not d.stop
    assert d.comparisons["socket-direct connect_us"].reached  # 1 ms = 1000 µs against an SD of 20 µs
    assert not d.comparisons["socket-direct lifecycle_ms"].reached
    assert d.reached == ["socket-direct connect_us"]


def test_rule_stops_before_another_round_would_overrun_the_time() -> None:
    rule = StoppingRule(parse_precision("0.1ms"), max_time_s=300)
    for elapsed in (60, 120, 180, 240):
        assert not rule.update(_looks(sd=20, blocks=30), cold_starts=int(elapsed), elapsed_s=elapsed).stop
    last = rule.update(_looks(sd=20, blocks=30), cold_starts=300, elapsed_s=250)  # 250 + 60 > 300
    assert last.stop and last.reason == MAX_TIME
    assert rule.record()["stop_reason"] == MAX_TIME and rule.record()["reached"] == []


def test_rule_stops_on_the_cold_start_budget_and_without_precision() -> None:
    rule = StoppingRule(None, max_cold_starts=1000)
    assert not rule.update(_looks(sd=2, blocks=30), cold_starts=999, elapsed_s=1).stop
    d = rule.update(_looks(sd=2, blocks=30), cold_starts=1000, elapsed_s=2)
    assert d.reason == MAX_COLD_STARTS and d.reached == []


def test_rule_rejects_bad_setup() -> None:
    with pytest.raises(ValueError, match="needs a precision"):
        StoppingRule(None)
    with pytest.raises(ValueError, match="alpha"):
        StoppingRule(None, max_time_s=1, alpha=0)
    with pytest.raises(ValueError, match="at least one headline"):
        StoppingRule(None, max_time_s=1).update({}, cold_starts=0, elapsed_s=0)


def test_headline_looks_take_the_unit_from_the_metric() -> None:
    looks = headline_looks({"a": [1.0, 2.0], "b": [3.0, 4.0]}, {"a": 450.0}, {"a": "lifecycle_ms", "b": "connect_us"})
    assert looks["a"].unit == "ms" and looks["b"].unit == "us" and looks["b"].reference_median is None
    with pytest.raises(ValueError, match="unit suffix"):
        headline_looks({"a": [1.0]}, {}, {"a": "lifecycle"})


def test_always_valid_p_agrees_with_the_interval() -> None:
    rng = np.random.default_rng(11)
    rule = StoppingRule(parse_precision("1ms"), max_time_s=600)
    agree = 0
    for i in range(300):
        looks = {"x": Look(rng.normal(rng.normal(0, 1.5), 5, 25 + i % 50)), "y": Look(rng.normal(0, 5, 30))}
        decision = rule.update(looks, cold_starts=i, elapsed_s=i)
        x = decision.comparisons["x"]
        assert x.interval is not None
        excludes = x.interval[0] > 0 or x.interval[1] < 0
        assert excludes == (x.p_value <= x.alpha_each)
        agree += excludes
        result = rule.family_results()["x"]
        assert result.significant == excludes and result.ci_adjusted == x.interval
        assert result.p_adjusted == pytest.approx(min(1.0, 2 * x.p_value))
        assert result.confidence_adjusted == pytest.approx(0.975)
    assert 0 < agree < 300  # both outcomes occurred
    assert always_valid_p([1.0], 0.1) == 1.0 and always_valid_p([2.0, 2.0], 0.1) == 0.0
    below = rule.update({"x": Look([1.0] * 5)}, cold_starts=0, elapsed_s=1e3).comparisons["x"]
    assert math.isnan(below.p_value)
    assert not rule.family_results()["x"].significant
