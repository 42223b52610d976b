"""Pure statistics on two samples: comparisons, multiple-testing correction, the delay fit and paired
blocks. Which scenarios are compared is the catalogue's business (catalogue.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from .stats import (
    DEFAULT_CONFIDENCE,
    Values,
    as_array,
    bootstrap_distribution_two,
    json_safe,
    percentile_interval,
    statistic,
)

# Below this many values per side a rank or variance test says nothing worth printing.
MIN_N_TEST = 3
# The fewest interleaved blocks a per-block paired interval or test is computed from: with 6 blocks a
# two-sided signed-rank test can first reject at 0.05 (its smallest exact p is 2/2^6 = 0.031); with fewer
# an interval at 95 % cannot exclude anything honestly (a bootstrap over 2-5 blocks excluded 0 in about
# half of simulated A/A runs).
MIN_BLOCKS_PAIRED = 6
# Up to this many values a side (blocks for the signed-rank test) rank tests use their exact null
# distribution, or a permutation test when ties make the exact one inapplicable; above it, the normal
# approximation (accurate there even at the family-wise levels of a run).
EXACT_MAX_N = 50
PERMUTATIONS = 9999


class TooFewBlocks(ValueError):
    """A per-block paired interval asked of fewer blocks than MIN_BLOCKS_PAIRED."""


def _has_ties(x: np.ndarray) -> bool:
    return bool(np.unique(x).size < x.size)


def rank_sum_p(a: Values, b: Values, alternative: str = "two-sided") -> float:
    """Mann–Whitney U p-value: exact at small n without ties, a permutation test at small n with ties,
    the continuity-corrected normal approximation above EXACT_MAX_N a side."""
    xa, xb = as_array(a), as_array(b)
    if xa.size == 0 or xb.size == 0:
        return math.nan
    if np.ptp(np.concatenate([xa, xb])) == 0:
        return 1.0
    method: Any = "asymptotic"
    if max(xa.size, xb.size) <= EXACT_MAX_N:
        tied = _has_ties(np.concatenate([xa, xb]))
        method = sps.PermutationMethod(n_resamples=PERMUTATIONS, rng=np.random.default_rng(0)) if tied else "exact"
    return float(sps.mannwhitneyu(xa, xb, alternative=alternative, method=method, use_continuity=True).pvalue)


def signed_rank_p(diffs: Values) -> float:
    """Wilcoxon signed-rank p-value of paired differences (zeros dropped): exact at small n without
    ties, a permutation test at small n with ties, the normal approximation above EXACT_MAX_N."""
    d = as_array(diffs)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    method: Any = "approx"
    if d.size <= EXACT_MAX_N:
        tied = _has_ties(np.abs(d))
        method = sps.PermutationMethod(n_resamples=PERMUTATIONS, rng=np.random.default_rng(0)) if tied else "exact"
    kwargs: dict[str, Any] = {"correction": True} if method == "approx" else {}
    return float(sps.wilcoxon(d, zero_method="wilcox", method=method, **kwargs).pvalue)


def paired_t_interval(diffs: Values, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, tuple[float, float]]:
    """Mean of per-block differences with its t interval; refuses fewer than MIN_BLOCKS_PAIRED blocks."""
    d = as_array(diffs)
    if d.size < MIN_BLOCKS_PAIRED:
        raise TooFewBlocks(f"a paired interval needs at least {MIN_BLOCKS_PAIRED} blocks, got {d.size}")
    mean = float(d.mean())
    half = float(sps.t.ppf(0.5 + confidence / 2.0, d.size - 1)) * float(np.std(d, ddof=1)) / math.sqrt(d.size)
    return mean, (mean - half, mean + half)


def levene(a: Values, b: Values, center: str = "mean") -> tuple[float, float]:
    """Levene's test of equal variances: center="mean" is Levene's original (what the thesis used),
    center="median" is the Brown–Forsythe variant, robust to the skew of latency data.
    Returns (statistic, p); NaN when undefined (too few values, or both samples constant)."""
    xa, xb = as_array(a), as_array(b)
    if xa.size < 2 or xb.size < 2:
        return (math.nan, math.nan)
    if np.ptp(xa) == 0 and np.ptp(xb) == 0:
        return (math.nan, math.nan)
    res = sps.levene(xa, xb, center=center)
    return (float(res.statistic), float(res.pvalue))


def mann_whitney(a: Values, b: Values, alternative: str = "two-sided") -> tuple[float, float]:
    """Mann–Whitney U (U of `a`, p; `rank_sum_p`). alternative="greater" tests that `a` tends to be larger."""
    xa, xb = as_array(a), as_array(b)
    if xa.size == 0 or xb.size == 0:
        return (math.nan, math.nan)
    res = sps.mannwhitneyu(xa, xb, alternative=alternative, method="asymptotic")
    return (float(res.statistic), rank_sum_p(xa, xb, alternative))


def cliffs_delta(a: Values, b: Values) -> float:
    """P(A > B) − P(A < B), in [−1, 1]; equal to the rank-biserial correlation 2U/(n·m) − 1.
    Negative means `a` tends to be smaller (e.g. socket faster than direct)."""
    xa, xb = as_array(a), as_array(b)
    if xa.size == 0 or xb.size == 0:
        return math.nan
    # Via ranks rather than the n×m comparison matrix: same value, O((n+m) log(n+m)).
    u = sps.mannwhitneyu(xa, xb, alternative="two-sided", method="asymptotic").statistic
    return float(2.0 * u / (xa.size * xb.size) - 1.0)


def cliffs_magnitude(delta: float) -> str:
    """Romano et al. (2006) thresholds: |d| < .147 negligible, < .33 small, < .474 medium, else large."""
    if math.isnan(delta):
        return "n/a"
    d = abs(delta)
    if d < 0.147:
        return "negligible"
    if d < 0.33:
        return "small"
    if d < 0.474:
        return "medium"
    return "large"


def ratio_of_medians(
    a: Values,
    b: Values,
    *,
    resamples: int = 2000,
    seed: int = 12345,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, tuple[float, float] | None]:
    """median(a) / median(b) with a percentile bootstrap CI (each sample resampled independently)."""
    return two_sample_estimate(a, b, "median", "ratio", resamples=resamples, seed=seed, confidence=confidence)


def difference_of_medians(
    a: Values,
    b: Values,
    *,
    resamples: int = 2000,
    seed: int = 12345,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, tuple[float, float] | None]:
    """median(a) − median(b) with a percentile bootstrap CI."""
    return two_sample_estimate(a, b, "median", "diff", resamples=resamples, seed=seed, confidence=confidence)


def two_sample_estimate(
    a: Values,
    b: Values,
    stat: str,
    how: str,
    *,
    resamples: int = 2000,
    seed: int = 12345,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, tuple[float, float] | None]:
    """stat(a) / stat(b) (how="ratio") or stat(a) − stat(b) (how="diff"), with a bootstrap CI."""
    xa, xb = as_array(a), as_array(b)
    if xa.size == 0 or xb.size == 0:
        return (math.nan, None)
    sa, sb = statistic(xa, stat), statistic(xb, stat)
    estimate = (sa / sb if sb != 0 else math.nan) if how == "ratio" else sa - sb
    if xa.size < 2 or xb.size < 2 or resamples < 1:
        return (estimate, None)
    combine = np.divide if how == "ratio" else np.subtract
    reps = bootstrap_distribution_two(xa, xb, stat, stat, combine, resamples=resamples, seed=seed)
    lo, hi = percentile_interval(reps, confidence)
    return (estimate, None if math.isnan(lo) else (lo, hi))


def holm(pvalues: Values) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1). NaN stays NaN and
    does not count towards the number of hypotheses."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


@dataclass
class Comparison:
    """`a` against reference `b` on one metric; ratio < 1 means `a` is smaller (faster)."""

    a: str
    b: str
    metric: str
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    mean_a: float
    mean_b: float
    variance_a: float
    variance_b: float
    ratio_median: float
    ratio_median_ci: tuple[float, float] | None
    diff_median: float
    diff_median_ci: tuple[float, float] | None
    mannwhitney_u: float
    mannwhitney_p: float
    cliffs_delta: float
    effect: str
    levene_mean_stat: float
    levene_mean_p: float
    levene_median_stat: float
    levene_median_p: float
    emphasis: bool = False
    # Holm-adjusted within each test family over all comparisons of the run; set by adjust().
    mannwhitney_p_holm: float = math.nan
    levene_mean_p_holm: float = math.nan
    levene_median_p_holm: float = math.nan
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = json_safe(asdict(self))
        return d


def compare(
    a_name: str,
    a: Values,
    b_name: str,
    b: Values,
    metric: str,
    *,
    resamples: int = 2000,
    seed: int = 12345,
    emphasis: bool = False,
) -> Comparison:
    xa, xb = as_array(a), as_array(b)
    ratio, ratio_ci = ratio_of_medians(xa, xb, resamples=resamples, seed=seed)
    diff, diff_ci = difference_of_medians(xa, xb, resamples=resamples, seed=seed + 1)
    enough = xa.size >= MIN_N_TEST and xb.size >= MIN_N_TEST
    u, p_mw = mann_whitney(xa, xb) if enough else (math.nan, math.nan)
    lm = levene(xa, xb, "mean") if enough else (math.nan, math.nan)
    lmed = levene(xa, xb, "median") if enough else (math.nan, math.nan)
    delta = cliffs_delta(xa, xb)
    notes = [] if enough else [f"fewer than {MIN_N_TEST} values on a side: tests not run"]

    def med(x: np.ndarray) -> float:
        return float(np.median(x)) if x.size else math.nan

    def mean(x: np.ndarray) -> float:
        return float(np.mean(x)) if x.size else math.nan

    def var(x: np.ndarray) -> float:
        return float(np.var(x, ddof=1)) if x.size > 1 else math.nan

    return Comparison(
        a=a_name,
        b=b_name,
        metric=metric,
        n_a=int(xa.size),
        n_b=int(xb.size),
        median_a=med(xa),
        median_b=med(xb),
        mean_a=mean(xa),
        mean_b=mean(xb),
        variance_a=var(xa),
        variance_b=var(xb),
        ratio_median=ratio,
        ratio_median_ci=ratio_ci,
        diff_median=diff,
        diff_median_ci=diff_ci,
        mannwhitney_u=u,
        mannwhitney_p=p_mw,
        cliffs_delta=delta,
        effect=cliffs_magnitude(delta),
        levene_mean_stat=lm[0],
        levene_mean_p=lm[1],
        levene_median_stat=lmed[0],
        levene_median_p=lmed[1],
        emphasis=emphasis,
        notes=notes,
    )


def adjust(comparisons: Sequence[Comparison]) -> None:
    """Holm-correct each test family across all comparisons of a run (in place)."""
    for raw, adj in (
        ("mannwhitney_p", "mannwhitney_p_holm"),
        ("levene_mean_p", "levene_mean_p_holm"),
        ("levene_median_p", "levene_median_p_holm"),
    ):
        for c, p in zip(comparisons, holm([getattr(c, raw) for c in comparisons]), strict=True):
            setattr(c, adj, p)


@dataclass
class DelayFit:
    """Least-squares line metric = intercept + slope × configured delay, over individual samples."""

    metric: str
    scenarios: list[str]
    n: int
    slope: float
    slope_ci: tuple[float, float] | None
    intercept: float
    r: float
    p: float
    stderr: float
    # Thesis Table 2 shape: per scenario the configured delay, mean and mean difference vs socket.
    table: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = json_safe(asdict(self))
        return d


def linear_fit(
    x: Values, y: Values, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, tuple[float, float] | None, float, float, float, float]:
    """(slope, slope CI from the t distribution with n−2 df, intercept, r, p, stderr) via linregress."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    if xa.size < 3 or np.ptp(xa) == 0:
        return (math.nan, None, math.nan, math.nan, math.nan, math.nan)
    res = sps.linregress(xa, ya)
    t = sps.t.ppf(0.5 + confidence / 2.0, xa.size - 2)
    ci = (float(res.slope - t * res.stderr), float(res.slope + t * res.stderr))
    return (
        float(res.slope),
        ci,
        float(res.intercept),
        float(res.rvalue),
        float(res.pvalue),
        float(res.stderr),
    )


def delay_fit(
    series: Mapping[str, tuple[float, Values]],
    metric: str,
    *,
    reference: tuple[str, Values] | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> DelayFit | None:
    """Fit `metric` against configured delay over the given scenarios ({id: (delay_ms, values)}).

    A slope of 1 ms per ms (lifecycle) or 1000 µs per ms (connect) means the handshake delay
    reaches the cold start undiminished. `reference` (usually socket) anchors the Diff column.
    None when fewer than two distinct delays are present."""
    xs: list[float] = []
    ys: list[float] = []
    for delay, values in series.values():
        arr = as_array(values)
        xs.extend([delay] * arr.size)
        ys.extend(arr.tolist())
    if len({d for d, v in series.values() if as_array(v).size}) < 2:
        return None
    slope, ci, intercept, r, p, stderr = linear_fit(xs, ys, confidence)
    ref_mean = math.nan
    table: list[dict[str, Any]] = []
    if reference is not None:
        ref = as_array(reference[1])
        ref_mean = float(np.mean(ref)) if ref.size else math.nan
        table.append({"scenario": reference[0], "delay_ms": None, "n": int(ref.size), "mean": ref_mean, "diff": 0.0})
    for name, (delay, values) in sorted(series.items(), key=lambda kv: kv[1][0]):
        arr = as_array(values)
        mean = float(np.mean(arr)) if arr.size else math.nan
        table.append({"scenario": name, "delay_ms": delay, "n": int(arr.size), "mean": mean, "diff": mean - ref_mean})
    return DelayFit(
        metric=metric,
        scenarios=list(series),
        n=len(xs),
        slope=slope,
        slope_ci=ci,
        intercept=intercept,
        r=r,
        p=p,
        stderr=stderr,
        table=table,
    )


def paired_blocks(
    a_name: str,
    a_by_block: Mapping[int, Values],
    b_name: str,
    b_by_block: Mapping[int, Values],
    metric: str,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Any] | None:
    """Interleaved runs: per randomised block, median(a) − median(b) of the cold starts in that block.

    Both arms of a block ran close together in time, so machine drift cancels in the difference;
    the Wilcoxon signed-rank test (`signed_rank_p`) and the t interval of the mean difference summarise
    the blocks, from MIN_BLOCKS_PAIRED blocks on (below it the record says so and has neither).
    None unless at least two blocks hold both scenarios."""
    diffs = []
    for block in sorted(set(a_by_block) & set(b_by_block)):
        xa, xb = as_array(a_by_block[block]), as_array(b_by_block[block])
        if xa.size and xb.size:
            diffs.append(float(np.median(xa) - np.median(xb)))
    if len(diffs) < 2:
        return None
    d = np.asarray(diffs)
    p = math.nan
    ci: tuple[float, float] | None = None
    refused = ""
    if d.size >= MIN_BLOCKS_PAIRED:
        p = signed_rank_p(d)
        ci = paired_t_interval(d, confidence)[1]
    else:
        refused = f"{d.size} blocks, fewer than the {MIN_BLOCKS_PAIRED} a paired interval or test needs"
    return json_safe(
        {
            "a": a_name,
            "b": b_name,
            "metric": metric,
            "blocks": int(d.size),
            "mean_diff": float(d.mean()),
            "median_diff": float(np.median(d)),
            "mean_diff_ci": ci,
            "mean_diff_ci_method": "t interval of the mean per-block difference",
            "confidence": confidence,
            "wilcoxon_p": p,
            "min_blocks": MIN_BLOCKS_PAIRED,
            "refused": refused or None,
            "diffs": diffs,
        }
    )
