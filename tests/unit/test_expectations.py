from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldstart_bench.analyse.expectations import (
    NO_EVIDENCE,
    PASS,
    SKIPPED,
    TOO_FEW,
    WORSE,
    evaluate,
    parse_expectation,
    parse_expectations,
    verdicts_fail,
)


def run_values(**scenarios: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    return {name.replace("_", "-"): metrics for name, metrics in scenarios.items()}


def lognormal(median: float, sigma: float, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(median), sigma, n)


def test_parse_the_documented_examples() -> None:
    e = parse_expectation("socket.connect_us.median <= direct.connect_us.median / 2")
    assert (str(e.lhs), e.op, str(e.rhs), e.factor, e.test) == (
        "socket.connect_us.median",
        "<=",
        "direct.connect_us.median",
        0.5,
        "bootstrap",
    )
    e = parse_expectation("socket.lifecycle_ms.variance < direct.lifecycle_ms.variance (levene, alpha=0.05)")
    assert e.test == "levene" and e.alpha == 0.05 and e.expected_sign == -1
    e = parse_expectation("direct-100ms.lifecycle_ms.median > direct-50ms.lifecycle_ms.median (mannwhitney)")
    assert e.lhs.scenario == "direct-100ms" and e.rhs is not None and e.rhs.scenario == "direct-50ms"
    assert e.test == "mannwhitney" and e.expected_sign == 1
    e = parse_expectation("socket-100ms.connect_us.p95 < 1e4 (min_n=5)")
    assert e.constant == 10000.0 and e.rhs is None and e.min_n == 5
    assert parse_expectation("a.connect_us.median < 0.5 * b.connect_us.median").factor == 0.5
    assert parse_expectation("a.connect_us.median < b.connect_us.median * 3").factor == 3.0
    assert parse_expectation("a.lifecycle_ms.stdev < b.lifecycle_ms.stdev (Brown-Forsythe)").test == "brown-forsythe"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("socket.connect_ms.median < 3", "unknown metric 'connect_ms'"),
        ("socket.connect_us.p90 < 3", "unknown statistic 'p90'"),
        ("socket.connect_us.median < 3 (ttest)", "unknown test 'ttest'"),
        ("socket.connect_us.median < 3 (alpha=2)", "alpha must be a number between 0 and 1"),
        ("socket.connect_us.median < 3 (min_n=x)", "min_n must be an integer"),
        ("socket.connect_us.median < 3 (colour=red)", "unknown option 'colour'"),
        ("socket.connect_us.median < 3 (mannwhitney)", "compares two scenarios"),
        ("socket.connect_us.p95 < direct.connect_us.p95 (mannwhitney)", "location shift"),
        ("socket.connect_us.median < direct.connect_us.median (levene)", "compares spreads"),
        ("socket.connect_us.median < direct.connect_us.median / 0", "division by zero"),
        ("socket.connect_us.median < direct.connect_us.median * -1", "factor must be positive"),
        ("socket.connect_us.median <> 3", "cannot parse"),
        ("socket connect_us median < 3", "cannot parse"),
        ("socket.connect_us.median < fast", "right-hand side"),
    ],
)
def test_parse_errors_are_clear(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_expectation(text)
    assert text.strip() in str(info.value)


def test_parse_expectations_block() -> None:
    out = parse_expectations("# thesis\nsocket.connect_us.median < 500\n\n  direct.connect_us.p95 < 2000  # slow\n")
    assert [str(e.lhs) for e in out] == ["socket.connect_us.median", "direct.connect_us.p95"]
    with pytest.raises(ValueError, match="line 2"):
        parse_expectations("socket.connect_us.median < 500\nnonsense")


def test_clear_improvement_passes_and_reversal_is_significantly_worse() -> None:
    values = run_values(
        socket={"connect_us": lognormal(260, 0.2, 40, 1), "lifecycle_ms": lognormal(338, 0.01, 40, 2)},
        direct={"connect_us": lognormal(951, 0.3, 40, 3), "lifecycle_ms": lognormal(353, 0.03, 40, 4)},
    )
    exps = [
        parse_expectation("socket.connect_us.median <= direct.connect_us.median / 2"),
        parse_expectation("socket.lifecycle_ms.median < direct.lifecycle_ms.median (mannwhitney)"),
        parse_expectation("socket.lifecycle_ms.variance < direct.lifecycle_ms.variance (levene)"),
        parse_expectation("socket.lifecycle_ms.variance < direct.lifecycle_ms.variance (brown-forsythe)"),
        parse_expectation("direct.connect_us.median < socket.connect_us.median (mannwhitney)"),
        parse_expectation("direct.lifecycle_ms.stdev < socket.lifecycle_ms.stdev (levene)"),
        parse_expectation("socket.connect_us.median < 100"),
    ]
    verdicts = evaluate(exps, values, resamples=400)
    assert [v.status for v in verdicts] == [PASS, PASS, PASS, PASS, WORSE, WORSE, WORSE]
    for v in verdicts:
        assert v.p_holm >= v.p
        line = v.line()
        assert v.expectation.lhs.metric in line and "alpha=0.05" in line and v.test in line
        assert "p=" in line or "p ≤ 2/(B+1) = 0.005 (B = 400 resamples)" in line


def test_same_distribution_gives_no_evidence() -> None:
    values = run_values(
        a={"lifecycle_ms": lognormal(350, 0.03, 30, 10)}, b={"lifecycle_ms": lognormal(350, 0.03, 30, 11)}
    )
    exps = [
        parse_expectation("a.lifecycle_ms.median < b.lifecycle_ms.median (mannwhitney)"),
        parse_expectation("a.lifecycle_ms.variance < b.lifecycle_ms.variance (levene)"),
        parse_expectation("a.lifecycle_ms.median < b.lifecycle_ms.median"),
    ]
    assert [v.status for v in evaluate(exps, values, resamples=300)] == [NO_EVIDENCE] * 3


def test_too_few_samples_and_absent_scenarios() -> None:
    values = run_values(
        socket={"connect_us": lognormal(260, 0.2, 5, 1)}, direct={"connect_us": lognormal(951, 0.2, 40, 2)}
    )
    verdicts = evaluate(
        [
            parse_expectation("socket.connect_us.median < direct.connect_us.median (mannwhitney)"),
            parse_expectation("socket.connect_us.median < direct.connect_us.median (mannwhitney, min_n=5)"),
            parse_expectation("direct.connect_us.p99 < 5000"),
            parse_expectation("pg-socket.connect_us.median < pg-direct.connect_us.median"),
        ],
        values,
        resamples=200,
    )
    assert [v.status for v in verdicts] == [TOO_FEW, PASS, TOO_FEW, SKIPPED]
    assert "needs at least 10" in verdicts[0].line() and "n=5/40" in verdicts[0].line()
    assert "needs at least 100" in verdicts[2].line()
    assert "pg-socket, pg-direct not in this run" in verdicts[3].line()


def test_holm_makes_marginal_results_inconclusive() -> None:
    # Alone, the expectation passes at 0.05; as one of ten tested together, Holm lifts it over alpha.
    rng = np.random.default_rng(1)
    run = {"a": {"lifecycle_ms": rng.normal(99.4, 1, 40)}, "b": {"lifecycle_ms": rng.normal(100, 1, 40)}}
    e = parse_expectation("a.lifecycle_ms.median < b.lifecycle_ms.median (mannwhitney)")
    alone = evaluate([e], run)[0]
    assert alone.status == PASS and 0.005 < alone.p < 0.05
    among = evaluate([e] * 10, run)
    assert all(v.status == NO_EVIDENCE and v.p_holm == pytest.approx(min(1.0, 10 * alone.p)) for v in among)


def test_factor_scales_the_threshold() -> None:
    values = run_values(socket={"connect_us": np.full(20, 300.0)}, direct={"connect_us": np.full(20, 1000.0)})
    v = evaluate([parse_expectation("socket.connect_us.median <= direct.connect_us.median / 2")], values, resamples=50)[
        0
    ]
    assert v.rhs_raw == 1000.0 and v.rhs_value == 500.0 and v.status == PASS
    assert "× 0.5 → threshold 500.0" in v.line()


def test_policies() -> None:
    values = run_values(a={"lifecycle_ms": np.arange(20.0)}, b={"lifecycle_ms": np.arange(20.0) + 100})
    worse = evaluate([parse_expectation("b.lifecycle_ms.median < a.lifecycle_ms.median (mannwhitney)")], values)
    unclear = evaluate([parse_expectation("a.lifecycle_ms.median < a.lifecycle_ms.median (mannwhitney)")], values)
    skipped = evaluate([parse_expectation("zz.lifecycle_ms.median < a.lifecycle_ms.median")], values)
    assert not verdicts_fail(worse, "report")
    assert verdicts_fail(worse, "fail") and not verdicts_fail(unclear, "fail")
    assert verdicts_fail(unclear, "strict") and not verdicts_fail(skipped, "strict")
    with pytest.raises(ValueError, match="unknown expectation policy"):
        verdicts_fail(worse, "maybe")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(min_value=1, max_value=1e4), min_size=10, max_size=40))
def test_a_scenario_against_itself_is_never_significant(values: list[float]) -> None:
    run = {"a": {"lifecycle_ms": np.array(values)}, "b": {"lifecycle_ms": np.array(values)}}
    exps = [
        parse_expectation("a.lifecycle_ms.median < b.lifecycle_ms.median (mannwhitney)"),
        parse_expectation("a.lifecycle_ms.variance < b.lifecycle_ms.variance (levene)"),
        parse_expectation("a.lifecycle_ms.median < b.lifecycle_ms.median"),
    ]
    for v in evaluate(exps, run, resamples=100):
        assert v.status == NO_EVIDENCE, v.line()


def test_verdict_dict_is_json_safe() -> None:
    import json

    v = evaluate([parse_expectation("a.lifecycle_ms.median < 3")], {"a": {"lifecycle_ms": np.array([])}})[0]
    d = v.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["status"] == TOO_FEW and d["lhs_value"] is None and math.isnan(v.lhs_value)


def test_a_bootstrap_p_at_its_floor_says_so() -> None:
    rng = np.random.default_rng(4)
    values = {"a": {"connect_us": rng.normal(100, 5, 40)}, "b": {"connect_us": rng.normal(900, 5, 40)}}
    (v,) = evaluate([parse_expectation("a.connect_us.median <= b.connect_us.median / 2")], values, resamples=999)
    assert v.p == pytest.approx(2 / 1000) and v.status == PASS
    assert "bootstrap p ≤ 2/(B+1) = 0.002 (B = 999 resamples)" in v.line() and "1.0e-03" not in v.line()
    assert v.to_dict()["p_text"].startswith("≤ 2/(B+1)")


def test_an_expectation_stating_a_findings_claim_takes_its_verdict() -> None:
    """One verdict per claim: the variance expectation of the catalogue and the predictability finding
    (Brown–Forsythe, Holm over the findings' family) say the same, whatever test the text names."""
    rng = np.random.default_rng(5)
    values = {"socket": {"lifecycle_ms": rng.normal(340, 2, 30)}, "direct": {"lifecycle_ms": rng.normal(350, 3, 30)}}
    finding = {
        "kind": "predictability",
        "scenarios": ["direct", "socket"],
        "metric": "lifecycle_ms",
        "estimate": 0.4,  # variance of socket / of direct
        "estimator": "ratio of lifecycle variances (Brown–Forsythe test)",
        "p_value": 0.004,
        "p_adjusted": 0.03,
        "significant": True,
        "family_size": 8,
        "alpha": 0.05,
        "comparison": "predictability",
    }
    exps = [
        parse_expectation("socket.lifecycle_ms.variance < direct.lifecycle_ms.variance (levene)"),
        parse_expectation("direct.lifecycle_ms.variance < socket.lifecycle_ms.variance (brown-forsythe)"),
        parse_expectation("socket.lifecycle_ms.median < direct.lifecycle_ms.median (mannwhitney)"),
    ]
    same, reversed_, other = evaluate(exps, values, resamples=100, findings=[finding])
    assert (same.status, same.p, same.p_holm, same.test) == (PASS, 0.004, 0.03, finding["estimator"])
    assert reversed_.status == WORSE and reversed_.p_holm == 0.03 and "findings' family" in reversed_.note
    # Not a claim of that finding: judged on its own, Holm over the expectations not adopted (one here).
    assert "judged_with" not in other.extra and other.p_holm == pytest.approx(other.p)
    finding["significant"] = False
    assert evaluate(exps[:1], values, resamples=100, findings=[finding])[0].status == NO_EVIDENCE
