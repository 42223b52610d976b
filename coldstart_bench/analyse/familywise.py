"""Family-wise findings: every comparison of a run judged at the run's family-wise level.

A run reports about twenty comparisons; at 95 % each, one or more excludes zero by chance in most
runs. Here each of the k testable comparisons of a family gets

- `p_value`: the rank test — Mann–Whitney U for two independent samples, Wilcoxon signed-rank for
  per-block paired differences: exact up to 50 values a side (50 blocks) without ties, a permutation
  test there with ties, the continuity-corrected normal approximation above (`compare.rank_sum_p`,
  `compare.signed_rank_p`);
- `p_adjusted`: Holm's step-down adjustment of those p-values over the family (`compare.holm`);
- `ci_adjusted`: the test-inverted interval at the Bonferroni level 1 − alpha/k for the
  **Hodges–Lehmann location shift**, not the difference of medians:
  two samples — median of all n·m differences a_i − b_j, interval between two of their order
  statistics; paired blocks — median of the Walsh averages (d_i + d_j)/2, i ≤ j (the pseudo-median
  of the per-block differences). Under a pure shift both equal the difference of medians.
  Adjusted comparisons (the lifecycle findings, adjusted.py) instead take the least-squares coefficient
  of the arm, adjusted for the engine phases and the runtime's start, with its t interval at the same
  level 1 − alpha/k and its t-test p-value.
- `significant`: the adjusted interval excludes 0. The interval's order statistics come from the same
  null distribution as the test (exact up to 50 a side, else the normal approximation below), so for
  data without ties this is exactly "the test rejects at alpha/k", i.e. Bonferroni-adjusted p ≤ alpha;
  with ties only the test's handling of them differs, so the two can disagree only at the boundary, and
  the interval decides. Bonferroni intervals over k comparisons hold simultaneously with probability
  ≥ 1 − alpha, so P(any A/A comparison significant) ≤ alpha. (The normal approximation is not used at
  small n: at the extreme levels of a family, 1 − 0.05/20 with 10 values a side, it is far off.)

  Holm rejects at least what Bonferroni rejects, and occasionally more: such a finding has
  p_adjusted ≤ alpha but significant = False, because no interval at the family-wise level
  supports a size for it. A run never states a saving that its interval does not support.

Order statistics: let M be the number of pairwise differences (n·m) or Walsh averages (N(N+1)/2).
Up to 50 a side, C is the largest c with P(T ≤ c − 1) ≤ alpha'/2 under the exact null distribution of
the statistic T (U, resp. W+; counted by recurrence). Above, with
mu = M/2 resp. N(N+1)/4, s² = n·m(n+m+1)/12 resp. N(N+1)(2N+1)/24, z = Φ⁻¹(1 − alpha'/2),
h = mu − 1/2 − z·s and C = ⌊h⌋ + 1. The interval is [D_(C), D_(M+1−C)] (1-based, ascending);
when C < 1 the data cannot bound the shift at that level and there is no interval (not significant).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from .adjusted import ADJUSTED, AdjustedData, AdjustedFit, ancova, covariate_label
from .compare import (
    EXACT_MAX_N,
    MIN_BLOCKS_PAIRED,
    DelayFit,
    TooFewBlocks,
    delay_fit,
    holm,
    rank_sum_p,
    signed_rank_p,
)
from .stats import DEFAULT_CONFIDENCE, Values, as_array, json_safe

DEFAULT_ALPHA = 0.05
# Below this many values per side (two samples) or blocks (paired) no comparison is tested.
MIN_N_TWO_SAMPLE = 3
# A slope through two delay levels always fits perfectly; three is the least that can show a line.
MIN_DELAY_LEVELS = 3
# Pairwise differences are materialised; above this many the interval uses a counting search instead.
_MAX_MATERIALISED = 4_000_000

TWO_SAMPLE = "two-sample"
PAIRED = "paired-blocks"


def _order_index(mu: float, s: float, confidence: float) -> int:
    """C of the module docstring: 1-based rank of the lower interval end (< 1: no interval)."""
    z = float(sps.norm.ppf(0.5 + confidence / 2.0))
    return math.floor(mu - 0.5 - z * s) + 1


@functools.lru_cache(maxsize=256)
def _rank_sum_null(n: int, m: int) -> np.ndarray:
    """P(U = u), u = 0..n·m, for the Mann–Whitney U of samples of n and m without ties: the number of
    ways counted by the recurrence N(i, j; u) = N(i − 1, j; u − j) + N(i, j − 1; u)."""
    rows = [np.zeros(n * m + 1) for _ in range(m + 1)]
    for j in range(m + 1):
        rows[j][0] = 1.0  # i = 0: U = 0 in one way
    for _i in range(1, n + 1):
        new = [np.zeros(n * m + 1) for _ in range(m + 1)]
        new[0][0] = 1.0
        for j in range(1, m + 1):
            new[j] = new[j - 1].copy()
            new[j][j:] += rows[j][: n * m + 1 - j]
        rows = new
    pmf = rows[m]
    return pmf / pmf.sum()


@functools.lru_cache(maxsize=256)
def _signed_rank_null(n: int) -> np.ndarray:
    """P(W+ = w), w = 0..n(n+1)/2, for n differences without ties or zeros."""
    top = n * (n + 1) // 2
    pmf = np.zeros(top + 1)
    pmf[0] = 1.0
    for i in range(1, n + 1):
        shifted = np.zeros_like(pmf)
        shifted[i:] = pmf[: top + 1 - i]
        pmf = 0.5 * (pmf + shifted)
    return pmf


def _exact_order_index(pmf: np.ndarray, confidence: float) -> int:
    """The largest C with P(T ≤ C − 1) ≤ (1 − confidence)/2 under the exact null."""
    tail = (1.0 - confidence) / 2.0
    return int(np.sum(np.cumsum(pmf) <= tail * (1 + 1e-9)))


def mann_whitney_order_index(n: int, m: int, confidence: float) -> int:
    if max(n, m) <= EXACT_MAX_N:
        return _exact_order_index(_rank_sum_null(n, m), confidence)
    return _order_index(n * m / 2.0, math.sqrt(n * m * (n + m + 1) / 12.0), confidence)


def signed_rank_order_index(n: int, confidence: float) -> int:
    if n <= EXACT_MAX_N:
        return _exact_order_index(_signed_rank_null(n), confidence)
    return _order_index(n * (n + 1) / 4.0, math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0), confidence)


def _kth_pairwise_difference(a_sorted: np.ndarray, b_sorted: np.ndarray, k: int) -> float:
    """The k-th smallest (1-based) of a_i − b_j without building all n·m of them: bisection on the
    value with a searchsorted count, to float resolution."""
    lo = float(a_sorted[0] - b_sorted[-1])
    hi = float(a_sorted[-1] - b_sorted[0])

    def count_le(x: float) -> int:
        # #{(i, j): a_i − b_j <= x} = Σ_i #{b_j >= a_i − x}
        return int(np.sum(b_sorted.size - np.searchsorted(b_sorted, a_sorted - x, side="left")))

    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if count_le(mid) >= k:
            hi = mid
        else:
            lo = mid
    return hi


def shift_interval(a: Values, b: Values, confidence: float) -> tuple[float, tuple[float, float] | None]:
    """Hodges–Lehmann shift of `a` against `b` (median of a_i − b_j) and its Mann–Whitney-inverted
    interval at `confidence`; None when the samples are too small to bound it at that level."""
    xa, xb = np.sort(as_array(a)), np.sort(as_array(b))
    n, m = xa.size, xb.size
    if n == 0 or m == 0:
        return (math.nan, None)
    total = n * m
    c = mann_whitney_order_index(n, m, confidence)
    if total <= _MAX_MATERIALISED:
        diffs = (xa[:, None] - xb[None, :]).ravel()
        estimate = float(np.median(diffs))
        if c < 1:
            return (estimate, None)
        lo, hi = np.partition(diffs, [c - 1, total - c])[[c - 1, total - c]]
        return (estimate, (float(lo), float(hi)))
    mid = (total + 1) // 2
    estimate = _kth_pairwise_difference(xa, xb, mid)
    if total % 2 == 0:
        estimate = 0.5 * (estimate + _kth_pairwise_difference(xa, xb, mid + 1))
    if c < 1:
        return (estimate, None)
    return (estimate, (_kth_pairwise_difference(xa, xb, c), _kth_pairwise_difference(xa, xb, total + 1 - c)))


def shift_intervals_batch(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `shift_interval` over leading axes: a (..., n), b (..., m) -> (lower, upper) (...).
    For simulations; no NaN handling. Infinite ends when the samples are too small for the level."""
    n, m = a.shape[-1], b.shape[-1]
    diffs = np.sort((a[..., :, None] - b[..., None, :]).reshape(*a.shape[:-1], n * m), axis=-1)
    c = mann_whitney_order_index(n, m, confidence)
    if c < 1:
        shape = diffs.shape[:-1]
        return (np.full(shape, -np.inf), np.full(shape, np.inf))
    return (diffs[..., c - 1], diffs[..., n * m - c])


def walsh_averages(d: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(d.shape[-1])
    return (d[..., i] + d[..., j]) / 2.0


def pseudo_median(diffs: Values) -> float:
    d = as_array(diffs)
    return float(np.median(walsh_averages(d))) if d.size else math.nan


def paired_interval(diffs: Values, confidence: float) -> tuple[float, tuple[float, float] | None]:
    """Hodges–Lehmann pseudo-median of paired differences and its signed-rank-inverted interval;
    refuses (TooFewBlocks) fewer than MIN_BLOCKS_PAIRED blocks."""
    d = as_array(diffs)
    if d.size < MIN_BLOCKS_PAIRED:
        raise TooFewBlocks(f"a paired interval needs at least {MIN_BLOCKS_PAIRED} blocks, got {d.size}")
    w = np.sort(walsh_averages(d))
    estimate = float(np.median(w))
    c = signed_rank_order_index(d.size, confidence)
    if c < 1:
        return (estimate, None)
    return (estimate, (float(w[c - 1]), float(w[w.size - c])))


def paired_intervals_batch(d: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `paired_interval` over leading axes: d (..., N) -> (lower, upper) (...)."""
    if d.shape[-1] < MIN_BLOCKS_PAIRED:
        raise TooFewBlocks(f"a paired interval needs at least {MIN_BLOCKS_PAIRED} blocks, got {d.shape[-1]}")
    w = np.sort(walsh_averages(d), axis=-1)
    c = signed_rank_order_index(d.shape[-1], confidence)
    if c < 1:
        shape = w.shape[:-1]
        return (np.full(shape, -np.inf), np.full(shape, np.inf))
    return (w[..., c - 1], w[..., w.shape[-1] - c])


@dataclass(frozen=True, eq=False)
class FamilyComparison:
    """One comparison of the family: `a` against reference `b`, either as two samples, as per-block
    paired differences a − b (one value per interleaved block), or as both arms' cold starts with the
    covariates the difference is adjusted for (`adjusted`, see adjusted.py)."""

    name: str
    a: Values | None = None
    b: Values | None = None
    paired_diffs: Values | None = None
    unit: str = "ms"
    adjusted: AdjustedData | None = None
    notes: tuple[str, ...] = ()  # carried into the result (e.g. why a covariate was left out)

    def __post_init__(self) -> None:
        two = self.a is not None and self.b is not None
        designs = int(two) + int(self.paired_diffs is not None) + int(self.adjusted is not None)
        if designs != 1:
            raise ValueError(
                f"comparison {self.name!r}: give exactly one of both samples a and b, paired_diffs, or adjusted"
            )

    @property
    def design(self) -> str:
        if self.adjusted is not None:
            return ADJUSTED
        return PAIRED if self.paired_diffs is not None else TWO_SAMPLE


@dataclass
class FamilyResult:
    """A comparison judged at the family-wise level; estimate and interval are a − b in `unit`."""

    name: str
    design: str
    estimator: str
    unit: str
    n: dict[str, int]
    estimate: float
    p_value: float
    p_adjusted: float
    family_size: int
    alpha: float
    confidence_adjusted: float
    ci_adjusted: tuple[float, float] | None
    significant: bool
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # the adjusted fit: stderr, df, coefficients, ...

    @property
    def holm_only(self) -> bool:
        """Holm rejects but the family-wise interval still includes 0 (reported as not distinguishable)."""
        return not self.significant and math.isfinite(self.p_adjusted) and self.p_adjusted <= self.alpha

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = json_safe(asdict(self))
        return d


def _arr(values: Values | None) -> np.ndarray:
    return as_array([] if values is None else values)


def _testable(c: FamilyComparison) -> bool:
    if c.adjusted is not None:
        return min(c.adjusted.y_a.size, c.adjusted.y_b.size) >= MIN_N_TWO_SAMPLE
    if c.paired_diffs is not None:
        return as_array(c.paired_diffs).size >= MIN_BLOCKS_PAIRED
    return min(_arr(c.a).size, _arr(c.b).size) >= MIN_N_TWO_SAMPLE


def _raw_p(c: FamilyComparison, fit: AdjustedFit | None = None) -> float:
    if fit is not None:
        return fit.p_value
    if c.paired_diffs is not None:
        return signed_rank_p(c.paired_diffs)
    return rank_sum_p(_arr(c.a), _arr(c.b))


def family_findings(
    comparisons: Sequence[FamilyComparison], *, alpha: float = DEFAULT_ALPHA, family_size: int | None = None
) -> list[FamilyResult]:
    """Judge every comparison at the family-wise level (see the module docstring); results in input
    order. The family is the comparisons with enough data; the others are reported untested.

    `family_size`: the family also holds tests not given here (a variance test, a slope): the
    Bonferroni level is then 1 − alpha/family_size (at least the testable comparisons given)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    names = [c.name for c in comparisons]
    if len(set(names)) != len(names):
        raise ValueError("comparison names must be unique within a family")
    testable = [_testable(c) for c in comparisons]
    k = max(sum(testable), family_size or 0)
    # The caller checked that an adjusted comparison can be fitted (adjusted.ancova raises otherwise).
    fits = {c.name: ancova(c.adjusted) for c, ok in zip(comparisons, testable, strict=True) if ok and c.adjusted}
    raw = [_raw_p(c, fits.get(c.name)) if ok else math.nan for c, ok in zip(comparisons, testable, strict=True)]
    adjusted = holm(raw)
    confidence = 1.0 - alpha / k if k else math.nan
    out = []
    for c, ok, p, p_adj in zip(comparisons, testable, raw, adjusted, strict=True):
        notes: list[str] = list(c.notes)
        details: dict[str, Any] = {}
        if c.adjusted is not None:
            n = {"a": int(c.adjusted.y_a.size), "b": int(c.adjusted.y_b.size)}
            estimator = c.adjusted.name
            fit = fits.get(c.name)
            estimate, ci = (fit.estimate, fit.interval(confidence)) if fit else (math.nan, None)
            if fit is not None:
                details = {
                    "covariates": list(c.adjusted.covariates),
                    "stderr": fit.stderr,
                    "df": fit.df,
                    "residual_sd": fit.residual_sd,
                    "r2": fit.r2,
                    "coefficients": fit.coefficients,
                }
            else:
                notes.append(f"fewer than {MIN_N_TWO_SAMPLE} values on a side: not tested")
        elif c.paired_diffs is not None:
            d = as_array(c.paired_diffs)
            n = {"blocks": int(d.size)}
            estimator = "Hodges–Lehmann pseudo-median of per-block differences (Wilcoxon signed-rank interval)"
            estimate, ci = paired_interval(d, confidence) if ok else (pseudo_median(d), None)
            if not ok:
                notes.append(f"fewer than {MIN_BLOCKS_PAIRED} blocks: not tested")
        else:
            xa, xb = _arr(c.a), _arr(c.b)
            n = {"a": int(xa.size), "b": int(xb.size)}
            estimator = "Hodges–Lehmann shift (Mann–Whitney interval)"
            estimate, ci = shift_interval(xa, xb, confidence) if ok else (shift_interval(xa, xb, 0.5)[0], None)
            if not ok:
                notes.append(f"fewer than {MIN_N_TWO_SAMPLE} values on a side: not tested")
        if ok and ci is None:
            notes.append(f"too few values to bound the difference at the family-wise level {confidence:.4g}")
        significant = ci is not None and (ci[0] > 0 or ci[1] < 0)
        result = FamilyResult(
            name=c.name,
            design=c.design,
            estimator=estimator,
            unit=c.unit,
            n=n,
            estimate=estimate,
            p_value=p,
            p_adjusted=p_adj,
            family_size=k,
            alpha=alpha,
            confidence_adjusted=confidence if ok else math.nan,
            ci_adjusted=ci,
            significant=significant,
            notes=notes,
            details=details,
        )
        if result.holm_only:
            result.notes.append(
                "Holm-adjusted p is below alpha but the family-wise interval includes 0: not distinguishable"
            )
        out.append(result)
    return out


def _interval_text(result: FamilyResult, digits: int) -> str:
    level = f"{result.confidence_adjusted:.2%}".replace(".00%", "%")
    ci = result.ci_adjusted
    if ci is None:
        return f"no family-wise {level} interval at this sample size"
    u = f" {result.unit}" if result.unit else ""
    return f"family-wise {level} CI {ci[0]:.{digits}f} to {ci[1]:.{digits}f}{u}"


def _p_text(result: FamilyResult) -> str:
    if not math.isfinite(result.p_adjusted):
        return "not tested"
    return f"Holm-adjusted p = {result.p_adjusted:.2g} over {result.family_size} findings"


def _estimator_text(result: FamilyResult) -> str:
    if result.design == ADJUSTED:
        covariates = result.details.get("covariates") or []
        return f"{result.estimator}: adjusted for {', '.join(covariate_label(c) for c in covariates)}"
    return result.estimator.split(" (")[0]


def saving_text(
    result: FamilyResult,
    *,
    subject: str,
    slow: str,
    fast: str,
    reference_median: float | None = None,
    digits: int = 1,
) -> str:
    """One sentence for a finding whose `result` estimates slow − fast (positive: `fast` saves time).

    Significant: states the saving (or cost) with its family-wise interval. Not significant: says
    the two are not distinguishable and gives only the interval — never a saving as fact."""
    u = f" {result.unit}" if result.unit else ""
    if not result.significant:
        return (
            f"{subject}: {fast} and {slow} are not distinguishable at this sample size "
            f"({slow} − {fast}: {_interval_text(result, digits)}, which includes 0; {_p_text(result)})."
        )
    d = result.estimate
    verb = f"saves {d:.{digits}f}{u}" if d > 0 else f"costs {-d:.{digits}f}{u} more"
    share = ""
    if reference_median and math.isfinite(reference_median):
        share = f", {abs(d) / reference_median:.1%} of {slow}'s median {reference_median:.{digits}f}{u}"
    return (
        f"{subject} {verb} per cold start ({slow} − {fast}, {_estimator_text(result)}{share}; "
        f"{_interval_text(result, digits)}; {_p_text(result)})."
    )


def order_findings(findings: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Significant findings first, otherwise in their original order (for the terminal)."""
    return sorted(findings, key=lambda f: not f.get("significant", False))


@dataclass(frozen=True)
class FitRefused:
    """A delay fit that was not made, and why."""

    metric: str
    scenarios: list[str]
    levels: list[float]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = json_safe(asdict(self) | {"refused": True})
        return d


def checked_delay_fit(
    series: Mapping[str, tuple[float, Values]],
    metric: str,
    *,
    reference: tuple[str, Values] | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    min_levels: int = MIN_DELAY_LEVELS,
) -> DelayFit | FitRefused:
    """`compare.delay_fit`, but only over at least `min_levels` distinct delays that hold data.

    Pass the family-wise level (1 − alpha/k) as `confidence` when the slope is one of k findings."""
    levels = sorted({float(delay) for delay, values in series.values() if as_array(values).size})
    if len(levels) < min_levels:
        shown = ", ".join(f"{x:g} ms" for x in levels) or "none"
        return FitRefused(
            metric=metric,
            scenarios=list(series),
            levels=levels,
            reason=f"a delay slope needs at least {min_levels} delay levels with data, this run has "
            f"{len(levels)} ({shown}); a line through two points fits exactly and says nothing about linearity",
        )
    fit = delay_fit(series, metric, reference=reference, confidence=confidence)
    if fit is None:  # pragma: no cover - delay_fit needs only two levels
        raise AssertionError("delay_fit refused a series with enough levels")
    return fit


def aa_control_warning(result: FamilyResult, *, scenario: str) -> dict[str, str] | None:
    """The run's false-positive check: two identical scenarios must not come out distinguishable.
    A warning {rule, scenario, text} (see warning_groups) when they do, else None."""
    if not result.significant:
        return None
    return {
        "rule": "aa_significant",
        "scenario": scenario,
        "text": f"A/A control {result.name} is significant ({_interval_text(result, 1)}, {_p_text(result)}): "
        "two identical scenarios differ, so the machine was not stable enough to trust the other findings",
    }
