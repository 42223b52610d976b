from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from coldstart_bench.analyse.compare import (
    MIN_BLOCKS_PAIRED,
    TooFewBlocks,
    adjust,
    cliffs_delta,
    cliffs_magnitude,
    compare,
    delay_fit,
    difference_of_medians,
    holm,
    levene,
    linear_fit,
    mann_whitney,
    paired_blocks,
    paired_t_interval,
    ratio_of_medians,
)
from coldstart_bench.analyse.familywise import paired_interval

RNG = np.random.default_rng(11)
A = RNG.normal(100, 3, 40)
B = RNG.normal(104, 1, 35)


@pytest.mark.parametrize("center", ["mean", "median"])
def test_levene_matches_scipy(center: str) -> None:
    ref = sps.levene(A, B, center=center)
    assert levene(A, B, center) == pytest.approx((ref.statistic, ref.pvalue))


def test_levene_undefined_cases_are_nan() -> None:
    assert all(math.isnan(x) for x in levene([1.0], [2.0, 3.0]))
    assert all(math.isnan(x) for x in levene([1.0, 1.0], [2.0, 2.0]))


def test_levene_hand_example() -> None:
    # Levene's W by hand: the one-way ANOVA F statistic of the absolute deviations from each group's mean.
    a, b = [1.0, 2.0, 3.0], [0.0, 2.0, 8.0]
    za = np.abs(np.array(a) - 2.0)  # [1, 0, 1]
    zb = np.abs(np.array(b) - 10.0 / 3.0)
    z = np.concatenate([za, zb])
    between = 3 * (za.mean() - z.mean()) ** 2 + 3 * (zb.mean() - z.mean()) ** 2
    within = ((za - za.mean()) ** 2).sum() + ((zb - zb.mean()) ** 2).sum()
    w = (6 - 2) * between / within
    assert levene(a, b, "mean")[0] == pytest.approx(w)
    assert levene(a, b, "mean")[1] == pytest.approx(sps.f.sf(w, 1, 4))


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_mann_whitney_matches_scipy(alternative: str) -> None:
    # 40 and 35 values without ties: the exact null distribution (the normal approximation's p is
    # three orders of magnitude off this far in the tail).
    ref = sps.mannwhitneyu(A, B, alternative=alternative, method="exact")
    assert mann_whitney(A, B, alternative) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-9, abs=0)


def test_mann_whitney_hand_example() -> None:
    # Every a below every b: U_a = 0; exact two-sided p for 3 vs 3 is 2/20.
    u, p = mann_whitney([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert u == 0.0 and p == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 2, 3], [4, 5, 6], -1.0),
        ([4, 5, 6], [1, 2, 3], 1.0),
        ([1, 3], [2], 0.0),
        ([1, 2], [1, 2], 0.0),
        ([1, 2, 3, 4], [2], 0.25),
    ],
)
def test_cliffs_delta_hand_examples(a: list[float], b: list[float], expected: float) -> None:
    assert cliffs_delta(a, b) == pytest.approx(expected)


small = st.lists(st.integers(min_value=0, max_value=20).map(float), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(small, small)
def test_cliffs_delta_equals_its_definition(a: list[float], b: list[float]) -> None:
    gt = sum(x > y for x in a for y in b)
    lt = sum(x < y for x in a for y in b)
    assert cliffs_delta(a, b) == pytest.approx((gt - lt) / (len(a) * len(b)))
    assert cliffs_delta(b, a) == pytest.approx(-cliffs_delta(a, b))


def test_cliffs_magnitude_thresholds() -> None:
    assert [cliffs_magnitude(d) for d in (0.1, -0.2, 0.4, -0.9, math.nan)] == [
        "negligible",
        "small",
        "medium",
        "large",
        "n/a",
    ]


def test_holm_hand_example() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → monotone 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = holm([0.01, math.nan, 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([]) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=20))
def test_holm_properties(ps: list[float]) -> None:
    adj = holm(ps)
    assert all(p <= a + 1e-12 <= 1 + 1e-12 for p, a in zip(ps, adj, strict=True))
    order = np.argsort(ps, kind="stable")
    assert all(adj[order[i]] <= adj[order[i + 1]] + 1e-12 for i in range(len(ps) - 1))
    assert all(a <= min(1.0, len(ps) * p) + 1e-12 for p, a in zip(ps, adj, strict=True))


def test_ratio_and_difference_of_medians() -> None:
    assert ratio_of_medians([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], resamples=50) == (2.0, (2.0, 2.0))
    est, ci = ratio_of_medians(A, B, resamples=400, seed=1)
    assert est == pytest.approx(np.median(A) / np.median(B))
    assert ci is not None and ci[0] <= est <= ci[1]
    d, dci = difference_of_medians(A, B, resamples=400)
    assert d == pytest.approx(np.median(A) - np.median(B))
    assert dci is not None and dci[0] <= d <= dci[1]
    assert ratio_of_medians([1.0], [2.0], resamples=50) == (0.5, None)


def test_ratio_ci_covers_a_known_scale_factor() -> None:
    rng = np.random.default_rng(5)
    slow = rng.lognormal(np.log(951), 0.2, 200)
    fast = rng.lognormal(np.log(951 / 3.6), 0.2, 200)
    _ratio, ci = ratio_of_medians(slow, fast, resamples=500)
    assert ci is not None and ci[0] < 3.6 < ci[1]


def test_linear_fit_exact_and_against_scipy() -> None:
    x = np.array([0, 0, 10, 10, 50, 50, 100, 100], dtype=float)
    slope, ci, intercept, r, *_ = linear_fit(x, 3 + 2 * x)
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(3.0) and r == pytest.approx(1.0)
    assert ci == pytest.approx((2.0, 2.0), abs=1e-9)
    y = 350 + x + np.random.default_rng(2).normal(0, 5, x.size)
    ref = sps.linregress(x, y)
    slope, ci, intercept, *_ = linear_fit(x, y)
    t = sps.t.ppf(0.975, x.size - 2)
    assert slope == pytest.approx(ref.slope) and intercept == pytest.approx(ref.intercept)
    assert ci == pytest.approx((ref.slope - t * ref.stderr, ref.slope + t * ref.stderr))
    assert linear_fit([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])[1] is None


def test_delay_fit_reproduces_thesis_table_2() -> None:
    # The thesis's averages: socket 338, direct 353, +10 ms 365, +50 ms 410, +100 ms 461.
    means = {
        "direct": (0.0, 353.0),
        "direct-10ms": (10.0, 365.0),
        "direct-50ms": (50.0, 410.0),
        "direct-100ms": (100.0, 461.0),
    }
    series = {k: (d, [m - 1.0, m, m + 1.0]) for k, (d, m) in means.items()}
    fit = delay_fit(series, "lifecycle_ms", reference=("socket", [337.0, 338.0, 339.0]))
    assert fit is not None
    xs = np.array([d for d, _ in means.values()])
    ys = np.array([m for _, m in means.values()])
    assert fit.slope == pytest.approx(np.polyfit(xs, ys, 1)[0])
    assert 1.0 < fit.slope < 1.15  # the delay reaches the lifecycle about one to one
    assert [row["diff"] for row in fit.table] == pytest.approx([0.0, 15.0, 27.0, 72.0, 123.0])
    assert fit.table[0]["scenario"] == "socket"
    assert delay_fit({"direct": (0.0, [1.0, 2.0])}, "lifecycle_ms") is None


def test_compare_and_adjust() -> None:
    c1 = compare("socket", B, "direct", A, "lifecycle_ms", resamples=100)
    c2 = compare("x", A, "y", A, "lifecycle_ms", resamples=100)
    adjust([c1, c2])
    assert c1.mannwhitney_p == pytest.approx(sps.mannwhitneyu(B, A, method="exact").pvalue, rel=1e-9, abs=0)
    assert c1.mannwhitney_p_holm >= c1.mannwhitney_p
    assert c1.levene_mean_p == pytest.approx(sps.levene(B, A, center="mean").pvalue)
    assert c1.levene_median_p == pytest.approx(sps.levene(B, A, center="median").pvalue)
    assert c1.cliffs_delta > 0 and c2.cliffs_delta == 0.0
    assert c1.ratio_median == pytest.approx(np.median(B) / np.median(A))
    d = c1.to_dict()
    assert d["ratio_median_ci"] is not None and isinstance(d["ratio_median_ci"], list)
    tiny = compare("a", [1.0, 2.0], "b", [3.0, 4.0], "connect_us", resamples=20)
    assert math.isnan(tiny.mannwhitney_p) and tiny.notes


def test_paired_blocks_cancel_drift() -> None:
    # Both arms drift upwards together; the per-block difference stays at −15.
    a = {k: [338.0 + 10 * k, 338.0 + 10 * k + 1] for k in range(8)}
    b = {k: [353.0 + 10 * k, 353.0 + 10 * k + 1] for k in range(8)}
    res = paired_blocks("socket", a, "direct", b, "lifecycle_ms")
    assert res is not None
    assert res["blocks"] == 8 and res["mean_diff"] == pytest.approx(-15.0)
    assert res["mean_diff_ci"] == pytest.approx([-15.0, -15.0])
    # Eight equal differences: every sign flip but two is less extreme, the exact p is 2/2^8.
    assert res["wilcoxon_p"] == pytest.approx(2 / 2**8)
    assert paired_blocks("a", {0: [1.0]}, "b", {0: [2.0], 1: [3.0]}, "lifecycle_ms") is None


def test_small_samples_with_ties_get_a_permutation_test_large_ones_the_normal_approximation() -> None:
    tied_a, tied_b = [1.0, 2.0, 2.0, 3.0, 5.0, 5.0], [4.0, 5.0, 6.0, 6.0, 7.0]
    exact = sps.mannwhitneyu(
        tied_a, tied_b, method=sps.PermutationMethod(n_resamples=9999, rng=np.random.default_rng(0))
    ).pvalue
    assert mann_whitney(tied_a, tied_b)[1] == pytest.approx(exact)
    rng = np.random.default_rng(12)
    big_a, big_b = rng.normal(0, 1, 80), rng.normal(0.5, 1, 70)
    assert mann_whitney(big_a, big_b)[1] == pytest.approx(sps.mannwhitneyu(big_a, big_b, method="asymptotic").pvalue)


def test_paired_intervals_refuse_fewer_blocks_than_the_minimum() -> None:
    a = {k: [100.0 + k] for k in range(MIN_BLOCKS_PAIRED - 1)}
    b = {k: [90.0 + 2 * k] for k in range(MIN_BLOCKS_PAIRED - 1)}
    res = paired_blocks("a", a, "b", b, "lifecycle_ms")
    assert res is not None and res["blocks"] == MIN_BLOCKS_PAIRED - 1
    assert res["mean_diff_ci"] is None and res["wilcoxon_p"] is None and str(MIN_BLOCKS_PAIRED) in res["refused"]
    few = [1.0, 2.0, 3.0, 4.0, 5.0][: MIN_BLOCKS_PAIRED - 1]
    with pytest.raises(TooFewBlocks, match=f"at least {MIN_BLOCKS_PAIRED} blocks"):
        paired_t_interval(few)
    with pytest.raises(TooFewBlocks):
        paired_interval(few, 0.95)
    mean, (lo, hi) = paired_t_interval([*few, 6.0])
    assert mean == 3.5 and lo < 3.5 < hi


def test_a_paired_interval_at_the_minimum_keeps_its_level_under_the_null() -> None:
    """The refused case of the old bootstrap: A/A per-block differences, 6 blocks, 2000 simulated runs:
    the 95 % t interval excludes 0 in about 5 % of them (the bootstrap over 2 blocks did in about half)."""
    rng = np.random.default_rng(8)
    d = rng.normal(0.0, 20.0, size=(2000, MIN_BLOCKS_PAIRED))
    intervals = [paired_t_interval(row)[1] for row in d]
    misses = sum(not lo <= 0 <= hi for lo, hi in intervals)
    assert misses / 2000 == pytest.approx(0.05, abs=0.015)


def test_paired_blocks_against_scipy() -> None:
    rng = np.random.default_rng(4)
    a = {k: rng.normal(100 + k, 1, 3) for k in range(10)}
    b = {k: rng.normal(102 + k, 1, 3) for k in range(10)}
    res = paired_blocks("a", a, "b", b, "connect_us")
    assert res is not None
    diffs = [np.median(a[k]) - np.median(b[k]) for k in range(10)]
    exact = sps.wilcoxon(diffs, method="exact").pvalue
    assert res["diffs"] == pytest.approx(diffs) and res["wilcoxon_p"] == pytest.approx(exact)
    assert res["mean_diff_ci"][0] <= res["mean_diff"] <= res["mean_diff_ci"][1]
