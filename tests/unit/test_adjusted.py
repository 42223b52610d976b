"""The adjusted lifecycle estimator (analyse/adjusted.py) on simulated runs: cold starts whose lifecycle
is the engine's phases plus a short in-function time, lifecycle SD ≈ 50 ms, true effects 0 (A/A) and 3 ms.
No Docker."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from coldstart_bench.analyse.adjusted import (
    AdjustmentRefused,
    adjusted_data,
    aligned_rows,
    ancova,
    choose_covariates,
    estimator_name,
    in_function_ms,
)
from coldstart_bench.analyse.familywise import FamilyComparison, family_findings
from coldstart_bench.analyse.findings import build_findings
from coldstart_bench.analyse.run import AnalysisConfig, analyse
from coldstart_bench.catalogue import default_catalogue
from coldstart_bench.samples import Sample

COVARIATES = ("create_to_start_ms", "die_to_destroy_ms", "start_to_ready_ms")
FULL = estimator_name(COVARIATES)
# Phase SDs (ms): sqrt(36² + 22² + 26² + 6²) ≈ 50 for the whole lifecycle, 6 ms of it inside the function.
SD_CREATE, SD_DESTROY, SD_READY, SD_IN_FUNCTION = 36.0, 22.0, 26.0, 6.0


def _skewed(rng: np.random.Generator, mean: float, sd: float, n: int) -> np.ndarray:
    """Gamma draws with the given mean and SD: right-skewed like engine latencies."""
    shape = (mean / sd) ** 2
    return rng.gamma(shape, mean / shape, n)


def simulated_arm(rng: np.random.Generator, n: int, in_function_ms: float) -> dict[str, np.ndarray]:
    create = _skewed(rng, 250.0, SD_CREATE, n)
    destroy = _skewed(rng, 60.0, SD_DESTROY, n)
    ready = _skewed(rng, 120.0, SD_READY, n)
    in_function = in_function_ms + rng.normal(0.0, SD_IN_FUNCTION, n)
    return {
        "lifecycle_ms": create + ready + in_function + destroy,
        "create_to_start_ms": create,
        "die_to_destroy_ms": destroy,
        "start_to_ready_ms": ready,
        "start_to_die_ms": ready + in_function,
    }


def test_the_simulated_lifecycle_has_the_stated_spread() -> None:
    arm = simulated_arm(np.random.default_rng(1), 20_000, 20.0)
    assert np.std(arm["lifecycle_ms"]) == pytest.approx(50.0, rel=0.05)


@pytest.mark.parametrize("effect", [0.0, 3.0])
def test_family_wise_intervals_cover_the_truth_and_are_five_times_narrower(effect: float) -> None:
    """200 simulated runs of direct, direct-aa and an arm `effect` ms faster, 60 cold starts each; the
    two lifecycle comparisons judged in a family of 5 (the size of a thesis run with its A/A arm).
    Both adjusted intervals together cover the truth in at least 95 % of the runs (the family-wise rate),
    each at least at its Bonferroni level within simulation error, and each is at most 1/5 as wide as
    the unadjusted (Hodges–Lehmann / Mann–Whitney) interval of the same run."""
    rng = np.random.default_rng(20261202 + int(effect))
    runs, n, k, alpha = 200, 60, 5, 0.05
    both_cover = 0
    cover = {"effect": 0, "aa": 0}
    ratios = []
    for _ in range(runs):
        direct = simulated_arm(rng, n, 20.0)
        aa = simulated_arm(rng, n, 20.0)
        fast = simulated_arm(rng, n, 20.0 - effect)
        comps = [
            FamilyComparison("effect", adjusted=adjusted_data(direct, fast, COVARIATES)),
            FamilyComparison("aa", adjusted=adjusted_data(aa, direct, COVARIATES)),
            FamilyComparison("effect plain", a=direct["lifecycle_ms"], b=fast["lifecycle_ms"]),
            FamilyComparison("aa plain", a=aa["lifecycle_ms"], b=direct["lifecycle_ms"]),
        ]
        judged = {r.name: r for r in family_findings(comps, alpha=alpha, family_size=k)}
        assert judged["effect"].estimator == FULL
        assert judged["effect"].confidence_adjusted == pytest.approx(1 - alpha / k)
        ok = []
        for name, truth in (("effect", effect), ("aa", 0.0)):
            ci = judged[name].ci_adjusted
            plain = judged[f"{name} plain"].ci_adjusted
            assert ci is not None and plain is not None
            hit = ci[0] <= truth <= ci[1]
            cover[name] += hit
            ok.append(hit)
            ratios.append((ci[1] - ci[0]) / (plain[1] - plain[0]))
        both_cover += all(ok)
    assert both_cover / runs >= 1 - alpha
    level = 1 - alpha / k
    tolerance = 2 * math.sqrt(level * (1 - level) / runs)
    assert min(cover.values()) / runs >= level - tolerance, cover
    assert max(ratios) <= 1 / 5, max(ratios)


def test_a_3_ms_effect_is_resolved_where_the_unadjusted_interval_cannot() -> None:
    rng = np.random.default_rng(7)
    direct, fast = simulated_arm(rng, 60, 20.0), simulated_arm(rng, 60, 17.0)
    fit = ancova(adjusted_data(direct, fast, COVARIATES))
    lo, hi = fit.interval(0.99)  # type: ignore[misc]
    assert hi - lo < 10 and lo < 3.0 < hi
    assert fit.df == 120 - 5
    # The coefficients of phases that add up to the lifecycle come out near 1.
    assert all(c == pytest.approx(1.0, abs=0.15) for c in fit.coefficients.values())
    assert fit.residual_sd == pytest.approx(SD_IN_FUNCTION, rel=0.3)


def test_the_fit_is_refused_when_it_cannot_judge() -> None:
    rng = np.random.default_rng(3)
    arm = simulated_arm(rng, 4, 20.0)
    with pytest.raises(AdjustmentRefused, match="degrees of freedom"):
        ancova(adjusted_data(arm, simulated_arm(rng, 3, 20.0), COVARIATES))
    exact = simulated_arm(rng, 30, 20.0)
    exact["start_to_ready_ms"] = exact["lifecycle_ms"] - exact["create_to_start_ms"] - exact["die_to_destroy_ms"]
    other = dict(exact)
    with pytest.raises(AdjustmentRefused, match="exactly"):
        ancova(adjusted_data(exact, other, COVARIATES))


def test_covariates_that_differ_are_dropped_only_when_another_factor_differs() -> None:
    rng = np.random.default_rng(5)
    bridge, nonet = simulated_arm(rng, 60, 20.0), simulated_arm(rng, 60, 20.0)
    nonet["create_to_start_ms"] = nonet["create_to_start_ms"] - 80.0  # no network namespace to set up
    nonet["lifecycle_ms"] = nonet["lifecycle_ms"] - 80.0
    same_method = choose_covariates(bridge, nonet, may_differ=False)
    # The simulation has no function-side runtime start; a run without that column is told so.
    assert same_method.used == COVARIATES
    assert same_method.left_out == {"runtime_start_us": "not measured in both arms"}
    with_runtime = {
        k: dict(v, runtime_start_us=rng.normal(75_000.0, 15_000.0, 60)) for k, v in (("a", bridge), ("b", nonet))
    }
    both = choose_covariates(with_runtime["a"], with_runtime["b"], may_differ=False)
    assert both.used == (*COVARIATES, "runtime_start_us") and not both.left_out
    factor = choose_covariates(bridge, nonet, may_differ=True)
    assert "create_to_start_ms" not in factor.used and "create_start not adjusted for" in factor.note()
    # Not adjusted for create→start, the 80 ms the network namespace costs stay in the estimate.
    fit = ancova(adjusted_data(bridge, nonet, factor.used))
    lo, hi = fit.interval(0.99)  # type: ignore[misc]
    assert 40 < lo < 80 < hi
    missing = dict(bridge, start_to_ready_ms=np.full(60, math.nan))
    assert "start_to_ready_ms" in choose_covariates(missing, nonet, may_differ=False).left_out


def _samples(name: str, arm: dict[str, np.ndarray], mode: str, network: str = "bridge") -> list[Sample]:
    n = arm["lifecycle_ms"].size
    return [
        Sample(
            scenario=name,
            iteration=i,
            mode=mode,
            container_id=f"{name}-{i}",
            ok=True,
            connect_us=900.0 if mode == "direct" else 250.0,
            lifecycle_ms=float(arm["lifecycle_ms"][i]),
            create_to_start_ms=float(arm["create_to_start_ms"][i]),
            start_to_ready_ms=float(arm["start_to_ready_ms"][i]),
            start_to_die_ms=float(arm["start_to_die_ms"][i]),
            die_to_destroy_ms=float(arm["die_to_destroy_ms"][i]),
            network=network,
            path=mode,
            block=i // 5,
            t_create_ns=10**9 * (i + 1),
        )
        for i in range(n)
    ]


def test_a_run_judges_its_lifecycle_findings_with_the_adjusted_estimator() -> None:
    rng = np.random.default_rng(11)
    samples = _samples("direct", simulated_arm(rng, 60, 20.0), "direct")
    samples += _samples("direct-aa", simulated_arm(rng, 60, 20.0), "direct")
    samples += _samples("socket", simulated_arm(rng, 60, 17.0), "socket")
    nonet = simulated_arm(rng, 60, 17.0)
    nonet["create_to_start_ms"] -= 80.0
    nonet["lifecycle_ms"] -= 80.0
    samples += _samples("socket-nonet", nonet, "socket", network="none")
    rows = aligned_rows(samples)
    assert set(rows) == {"direct", "direct-aa", "socket", "socket-nonet"}
    summary = analyse(samples, {}, AnalysisConfig(bootstrap_resamples=50)).summary
    by = {(f["kind"], tuple(f["scenarios"])): f for f in summary["findings"]}
    injection = by[("lifecycle_saving", ("direct", "socket"))]
    assert injection["estimator"] == FULL and injection["design"] == "adjusted"
    lo, hi = injection["ci_adjusted"]
    assert (hi - lo) / 2 <= 3.0 and lo <= 3.0 <= hi
    assert injection["differs_in"] == [] and injection["in_function"]["estimate"] == pytest.approx(3.0, abs=2.5)
    assert "thesis" in injection and injection["fit"]["df"] == 115
    control = by[("control", ("direct-aa", "direct"))]
    assert control["estimator"] == FULL and not control["significant"]
    assert control["rules_out_beyond_ms"] is not None and "rule out an effect larger than" in control["text"]
    network = by[("lifecycle_saving", ("socket", "socket-nonet"))]
    assert network["differs_in"] == ["network_mode"] and network["comparison_kind"] == "factor"
    assert network["text"].startswith("Dropping the container's network namespace") and network["significant"]
    assert "create_to_start_ms" not in network["fit"]["covariates"]
    stack = by[("lifecycle_saving", ("direct", "socket-nonet"))]
    assert stack["comparison_kind"] == "stack" and stack["text"].startswith("Stack comparison")
    assert not any(f["text"].startswith("Injection") for f in summary["findings"] if f.get("differs_in"))
    plans = summary["planning"]
    assert {tuple(p["scenarios"]) for p in plans} == {("direct", "socket")}  # not the network-namespace pairs
    assert any(p["design"] == "adjusted" and p["cold_starts_per_arm"] for p in plans)
    pairs = {(c["a"], c["b"]): c for c in summary["comparisons"]}
    assert pairs[("socket-nonet", "direct")]["differs_in"] == ["network_mode"]
    assert pairs[("socket", "direct")]["differs_in"] == []


def test_build_findings_without_rows_keeps_the_unadjusted_estimator() -> None:
    rng = np.random.default_rng(2)
    values = {
        name: {m: arm[m] for m in ("lifecycle_ms", "start_to_die_ms")}
        | {"connect_us": np.full(60, 900.0 if name == "direct" else 250.0)}
        for name, arm in (("direct", simulated_arm(rng, 60, 20.0)), ("socket", simulated_arm(rng, 60, 17.0)))
    }
    scenarios = {
        name: {"lifecycle_ms": {"variance": float(np.var(v["lifecycle_ms"], ddof=1)), "p99": 1.0}}
        for name, v in values.items()
    }
    result = build_findings(values, scenarios, {"direct": 0.0, "socket": 0.0}, {}, default_catalogue())
    life = next(f for f in result.findings if f["kind"] == "lifecycle_saving")
    assert life["estimator"].startswith("Hodges–Lehmann")
    assert any("not adjusted" in n for n in life["notes"])


def test_connection_work_before_main_is_not_runtime_start_and_in_function_time_uses_the_stamps() -> None:
    """An fd-3 arm acquires before main: start→ready less pre_main_us is the runtime's start, and the
    in-function time is the function's own main → end (function_us) when it stamped it."""
    fd3 = Sample(
        "socket-fd3", 0, "socket", "c", True, lifecycle_ms=400.0, start_to_ready_ms=130.0, start_to_die_ms=150.0
    )
    fd3.pre_main_us, fd3.function_us = 2000.0, 21_000.0
    plain = Sample("direct", 0, "direct", "d", True, lifecycle_ms=400.0, start_to_ready_ms=128.0, start_to_die_ms=150.0)
    rows = aligned_rows([fd3, plain, dataclasses.replace(plain, ok=False)])
    assert rows["socket-fd3"]["start_to_ready_ms"][0] == pytest.approx(128.0)
    assert rows["direct"]["start_to_ready_ms"][0] == pytest.approx(128.0) and rows["direct"]["lifecycle_ms"].size == 1
    assert in_function_ms(rows["socket-fd3"]) == ("function_us / 1000 (main → end)", pytest.approx([21.0]))
    how, values = in_function_ms(rows["direct"])
    assert how == "start_to_die_ms − start_to_ready_ms" and values == pytest.approx([22.0])
