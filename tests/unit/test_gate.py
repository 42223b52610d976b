from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldstart_bench.analyse.gate import (
    GateRuleError,
    compare_with_baseline,
    evaluate_rules,
    parse_gate_rules,
    parse_max_regression,
)


def lognormal(median: float, sigma: float, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(median), sigma, n)


def run(connect: np.ndarray, life: np.ndarray, name: str = "direct") -> dict[str, dict[str, np.ndarray]]:
    return {name: {"connect_us": connect, "lifecycle_ms": life}}


def test_parse_rules() -> None:
    rules = parse_gate_rules(
        """
        # generous limits
        socket.connect_us.p50 <= 1
        direct-100ms.lifecycle_ms.p95 < 1500   # trailing comment

        socket.lifecycle_ms.variance <= 2.5e3 ; socket.connect_us.stdev <= 100
        """
    )
    assert [str(r) for r in rules] == [
        "socket.connect_us.p50 <= 1",
        "direct-100ms.lifecycle_ms.p95 < 1500",
        "socket.lifecycle_ms.variance <= 2.5e3",
        "socket.connect_us.stdev <= 100",
    ]
    assert rules[2].limit == 2500.0 and rules[1].line_no == 4
    assert parse_gate_rules("") == [] and parse_gate_rules("# only a comment\n\n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("socket.connect_us.p90 <= 1", "unknown statistic 'p90'"),
        ("socket.connect_ms.p50 <= 1", "unknown metric 'connect_ms'"),
        ("socket.connect_us.p50 >= 1", "operator '>=' not allowed"),
        ("socket.connect_us.p50 <= fast", "limit 'fast' is not a number"),
        ("socket.connect_us.p50 <=", "cannot parse"),
        ("socket.connect_us <= 1", "cannot parse"),
        ("socket.connect_us.p50 <= inf", "finite"),
    ],
)
def test_bad_rules_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(GateRuleError, match=message) as info:
        parse_gate_rules("socket.connect_us.p50 <= 5000\n" + text)
    msg = str(info.value)
    assert "bench_gate line 2" in msg and repr(text) in msg
    assert isinstance(info.value, ValueError)


def test_syntax_is_shown_when_a_rule_cannot_be_parsed() -> None:
    with pytest.raises(GateRuleError, match=r"expected <scenario>\.<metric>\.<stat> <= <value>"):
        parse_gate_rules("nonsense")


@pytest.mark.parametrize(("text", "value"), [("10%", 0.10), ("0.1", 0.10), (" 5 %", 0.05), ("0", 0.0), ("150%", 1.5)])
def test_parse_max_regression(text: str, value: float) -> None:
    assert parse_max_regression(text) == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "message"), [("ten", "expects a percentage"), ("-5%", "non-negative"), ("10", "ambiguous")]
)
def test_parse_max_regression_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_max_regression(text)


def test_absolute_rules_results() -> None:
    values = {"socket": {"connect_us": np.array([100.0, 123.4, 200.0]), "lifecycle_ms": np.array([])}}
    rules = parse_gate_rules(
        "socket.connect_us.p50 <= 1\nsocket.connect_us.mean < 141.13\ndirect.connect_us.p50 <= 1\n"
        "socket.lifecycle_ms.mean <= 1\nsocket.connect_us.p50 <= 123.4"
    )
    r = evaluate_rules(rules, values)
    assert [x.passed for x in r] == [False, False, True, False, True]
    assert r[0].line() == "GATE FAIL socket connect_us p50 observed=123.4 limit<=1"
    assert r[1].line() == "GATE FAIL socket connect_us mean observed=141.1 limit<141.13"
    assert r[4].line() == "GATE OK socket connect_us p50 observed=123.4 limit<=123.4"
    assert (
        r[2].skipped and r[2].line().startswith("GATE SKIP direct connect_us p50") and "not in this run" in r[2].line()
    )
    assert "no successful samples" in r[3].line()


def test_identical_baseline_passes() -> None:
    cur = run(lognormal(951, 0.3, 20, 1), lognormal(353, 0.03, 20, 2))
    results = compare_with_baseline(cur, cur, max_regression=0.10)
    assert len(results) == 2 and all(r.passed for r in results)
    assert all(r.line().startswith("GATE OK direct") and "change=+0.0%" in r.line() for r in results)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=5, max_value=60),
    st.floats(min_value=0.01, max_value=1.0),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_a_run_against_itself_never_fails(seed: int, n: int, sigma: float, max_regression: float) -> None:
    cur = run(lognormal(951, sigma, n, seed), lognormal(353, sigma, n, seed + 1))
    shuffled = {k: {m: np.random.default_rng(seed).permutation(v) for m, v in d.items()} for k, d in cur.items()}
    assert all(r.passed for r in compare_with_baseline(shuffled, cur, max_regression=max_regression))


def test_a_a_false_failure_rate_is_below_alpha() -> None:
    # Two independent runs of the same setup (the CI size, 20 cold starts) must almost never fail.
    fails = 0
    for seed in range(200):
        base = run(lognormal(951, 0.3, 20, 2 * seed), lognormal(353, 0.05, 20, 2 * seed + 1), "socket")
        cur = run(lognormal(951, 0.3, 20, 10_000 + seed), lognormal(353, 0.05, 20, 20_000 + seed), "socket")
        fails += not all(r.passed for r in compare_with_baseline(cur, base, max_regression=0.10))
    assert fails / 200 <= 0.05


def test_honest_regression_fails() -> None:
    # Baseline shaped like direct-10ms, current like direct-50ms: connect 5×, lifecycle +12 %.
    base = run(lognormal(10_951, 0.2, 20, 1), lognormal(365, 0.03, 20, 2))
    cur = run(lognormal(50_951, 0.2, 20, 3), lognormal(410, 0.03, 20, 4))
    results = compare_with_baseline(cur, base, max_regression=0.10)
    assert [r.passed for r in results] == [False, False]
    line = results[0].line()
    assert line.startswith("GATE FAIL direct connect_us median observed=")
    assert "baseline=" in line and "change=+" in line and "limit=+10%" in line and "p=" in line
    assert results[1].change == pytest.approx(410 / 365 - 1, abs=0.05)


def test_significant_but_small_slowdown_passes() -> None:
    base = run(lognormal(951, 0.05, 200, 1), lognormal(353, 0.01, 200, 2))
    cur = run(lognormal(951 * 1.05, 0.05, 200, 3), lognormal(353 * 1.05, 0.01, 200, 4))
    results = compare_with_baseline(cur, base, max_regression=0.10)
    assert all(r.passed for r in results)
    assert all(r.p_holm < 0.05 and "within the allowed regression" in r.line() for r in results)


def test_large_but_unproven_change_passes() -> None:
    base = run(np.array([100.0, 900.0, 120.0, 800.0, 110.0]), np.array([300.0, 500.0, 310.0, 490.0, 305.0]))
    cur = run(np.array([900.0, 130.0, 850.0, 115.0, 880.0]), np.array([495.0, 300.0, 480.0, 320.0, 500.0]))
    results = compare_with_baseline(cur, base, max_regression=0.10)
    assert all(r.passed for r in results)
    assert any("not significant" in r.line() for r in results)


def test_scenarios_missing_on_either_side_are_not_compared_and_tiny_ones_are_not_tested() -> None:
    base = {**run(lognormal(951, 0.2, 20, 1), lognormal(353, 0.03, 20, 2)), **run(np.ones(3), np.ones(3), "socket")}
    cur = {
        **run(lognormal(951, 0.2, 20, 3), lognormal(353, 0.03, 20, 4), "direct-10ms"),
        **run(np.ones(3) * 9, np.ones(3) * 9, "socket"),
    }
    results = compare_with_baseline(cur, base, max_regression=0.10)
    assert {r.scenario for r in results} == {"socket"}
    assert all(r.passed and "too few samples to test" in r.line() for r in results)
