"""The primary lifecycle estimator: the arm's effect on the lifecycle adjusted for what the connection
method cannot change (analysis of covariance, ordinary least squares).

Why. A cold start's lifecycle is create→start + start→die + die→destroy, and start→die begins with
the runtime's own start (start→ready, the container start to the function's main). The connection
method acts only inside the function; the engine phases and the runtime start carry most of the
lifecycle's variance (SD ≈ 50 ms against a few ms in the function). Regressing

    lifecycle = b0 + effect · [arm is a] + Σ b_j · (covariate_j − mean_j) + residual

over both arms' cold starts removes that variance from the estimate of `effect` without assuming the
covariates add up to the lifecycle (their coefficients are fitted). It is the CUPED / ANCOVA estimator of
large experimentation platforms. The interval is the ordinary t interval of the arm's coefficient with
n − p residual degrees of freedom, at whatever (family-wise) level the caller passes.

It is valid when the covariates do not depend on the arm. For arms that differ only in the connection
method they cannot by construction: a difference found by the engine-phase check is then chance or drift,
which the adjustment removes. For arms that also differ in something else (network mode, image, ...), a
covariate that differs between them may carry that factor's effect; `choose_covariates` leaves such a
covariate out, so the estimate keeps what the other factor does to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from ..samples import Sample
from .compare import holm, mann_whitney
from .stats import Values, as_array

LIFECYCLE = "lifecycle_ms"
# What the connection method cannot change, in the order the estimator's name lists them: (column, short
# name). A column absent from a run's samples (all NaN) is not used.
COVARIATES: tuple[tuple[str, str], ...] = (
    ("create_to_start_ms", "create_start"),
    ("die_to_destroy_ms", "die_destroy"),
    ("start_to_ready_ms", "start_ready"),
    # entry → main by the function's own clock: the language runtime's start, before any connection
    # work (an fd-3 entrypoint's acquire is pre_main_us, not part of it); µs, the fit does not mind.
    ("runtime_start_us", "runtime_start"),
)
COVARIATE_COLUMNS: tuple[str, ...] = tuple(c for c, _ in COVARIATES)
SHORT_NAME: dict[str, str] = dict(COVARIATES)
# The time inside the function: main → end as the function stamps it (function_us, with the connection
# work an fd-3 entrypoint did before main), else start→die less the runtime's start (start→ready).
RUN_PHASE = "start_to_die_ms"
READY = "start_to_ready_ms"
PRE_MAIN = "pre_main_us"  # connection work done before main (the fd-3 entrypoint's acquire and check)
FUNCTION = "function_us"
ALIGNED_COLUMNS: tuple[str, ...] = (LIFECYCLE, RUN_PHASE, *COVARIATE_COLUMNS, PRE_MAIN, FUNCTION)
# Fewer residual degrees of freedom than this and the fit says little; the comparison falls back.
MIN_RESIDUAL_DF = 5
# A covariate measured in fewer than this share of an arm's cold starts is left out rather than the rows.
MIN_COVERAGE = 0.5
ADJUSTED = "adjusted"

# {scenario: {column: values of the successful cold starts, aligned by sample, NaN where not measured}}
Rows = Mapping[str, Mapping[str, np.ndarray]]


def aligned_rows(
    samples: Sequence[Sample], columns: Sequence[str] = ALIGNED_COLUMNS
) -> dict[str, dict[str, np.ndarray]]:
    """Per scenario, the successful cold starts' columns side by side (row i of every column is the same
    cold start), NaN kept: the adjusted estimator needs each lifecycle with its own covariates.

    start_to_ready_ms is taken less the connection work an fd-3 entrypoint did before main
    (pre_main_us): that is the connection method's, not the runtime's start."""
    per: dict[str, list[Sample]] = {}
    for s in samples:
        if s.ok:
            per.setdefault(s.scenario, []).append(s)
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, group in per.items():
        cols = {c: np.array([float(getattr(s, c, math.nan)) for s in group], dtype=float) for c in columns}
        if READY in cols and PRE_MAIN in cols:
            cols[READY] = cols[READY] - np.nan_to_num(cols[PRE_MAIN], nan=0.0) / 1000.0
        out[name] = cols
    return out


def in_function_ms(rows: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """What the function itself took per cold start, and how it was measured: main → end from the
    function's own stamps (function_us) when most cold starts have them, else
    start→die − start→ready (main to the container's death)."""
    function = rows.get(FUNCTION)
    if function is not None and function.size and float(np.mean(np.isfinite(function))) >= MIN_COVERAGE:
        return "function_us / 1000 (main → end)", as_array(function / 1000.0)
    run, ready = rows.get(RUN_PHASE), rows.get(READY)
    if run is None or ready is None:
        return "", np.array([])
    return "start_to_die_ms − start_to_ready_ms", as_array(run - ready)


def covariate_label(column: str) -> str:
    """create_to_start_ms -> create→start."""
    return column.removesuffix("_ms").replace("_to_", "→")


def estimator_name(covariates: Sequence[str]) -> str:
    return f"ancova({','.join(SHORT_NAME.get(c, c) for c in covariates)})"


def measured(rows: Mapping[str, np.ndarray], column: str) -> bool:
    arr = rows.get(column)
    return arr is not None and arr.size > 0 and float(np.mean(np.isfinite(arr))) >= MIN_COVERAGE


@dataclass(frozen=True)
class CovariateChoice:
    used: tuple[str, ...]
    left_out: dict[str, str]  # column -> why

    def note(self) -> str:
        return "; ".join(f"{SHORT_NAME.get(c, c)} not adjusted for: {why}" for c, why in self.left_out.items())


def choose_covariates(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], *, may_differ: bool, alpha: float = 0.05
) -> CovariateChoice:
    """The covariates both arms measured; when the arms differ in more than the connection method
    (`may_differ`), without those whose distribution differs between them (Mann–Whitney, Holm over the
    candidates): such a covariate may carry the other factor's effect."""
    used = [c for c in COVARIATE_COLUMNS if measured(a, c) and measured(b, c)]
    left_out = {c: "not measured in both arms" for c in COVARIATE_COLUMNS if c not in used}
    if may_differ and used:
        ps = [mann_whitney(a[c], b[c])[1] for c in used]
        for c, p_adj in zip(list(used), holm(ps), strict=True):
            if math.isfinite(p_adj) and p_adj <= alpha:
                used.remove(c)
                left_out[c] = (
                    f"it differs between the arms (Holm-adjusted p = {p_adj:.2g}) and they differ in more than "
                    "the connection method"
                )
    return CovariateChoice(tuple(used), left_out)


@dataclass(frozen=True)
class AdjustedData:
    """Both arms' outcomes and covariates, rows with a missing value dropped."""

    y_a: np.ndarray
    y_b: np.ndarray
    x_a: np.ndarray  # (n_a, p)
    x_b: np.ndarray  # (n_b, p)
    covariates: tuple[str, ...]

    @property
    def name(self) -> str:
        return estimator_name(self.covariates)


def adjusted_data(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], covariates: Sequence[str], outcome: str = LIFECYCLE
) -> AdjustedData:
    def side(rows: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        y = np.asarray(rows[outcome], dtype=float)
        x = np.empty((y.size, 0))
        if covariates:
            x = np.column_stack([np.asarray(rows[c], dtype=float) for c in covariates])
        keep = np.isfinite(y) & np.all(np.isfinite(x), axis=1)
        return y[keep], x[keep]

    y_a, x_a = side(a)
    y_b, x_b = side(b)
    return AdjustedData(y_a, y_b, x_a, x_b, tuple(covariates))


@dataclass(frozen=True)
class AdjustedFit:
    estimate: float  # a − b, adjusted
    stderr: float
    df: int
    p_value: float
    coefficients: dict[str, float]  # of the covariates
    residual_sd: float
    r2: float  # share of the outcome's variance the arm and covariates explain

    def interval(self, confidence: float) -> tuple[float, float] | None:
        if not (math.isfinite(self.stderr) and self.df >= 1):
            return None
        t = float(sps.t.ppf(0.5 + confidence / 2.0, self.df))
        return (self.estimate - t * self.stderr, self.estimate + t * self.stderr)


class AdjustmentRefused(ValueError):
    """The data cannot carry the adjusted fit (too few rows, or the covariates explain the outcome exactly)."""


def ancova(data: AdjustedData) -> AdjustedFit:
    """OLS of the outcome on the arm indicator (1 for a) and the centred covariates."""
    y = np.concatenate([data.y_a, data.y_b])
    arm = np.concatenate([np.ones(data.y_a.size), np.zeros(data.y_b.size)])
    x = np.vstack([data.x_a, data.x_b]) if data.covariates else np.empty((y.size, 0))
    if min(data.y_a.size, data.y_b.size) < 2:
        raise AdjustmentRefused("fewer than 2 cold starts with every covariate in an arm")
    x = x - x.mean(axis=0) if x.size else x
    design = np.column_stack([np.ones(y.size), arm, x])
    beta, _res, rank, _sv = np.linalg.lstsq(design, y, rcond=None)
    df = int(y.size - rank)
    if df < MIN_RESIDUAL_DF:
        raise AdjustmentRefused(f"{df} residual degrees of freedom, fewer than {MIN_RESIDUAL_DF}")
    if rank < design.shape[1]:
        # A covariate is constant or a combination of the others: the arm's coefficient may not be identified.
        raise AdjustmentRefused("the covariates are collinear (one is constant or a combination of the others)")
    resid = y - design @ beta
    rss = float(resid @ resid)
    tss = float(np.sum((y - y.mean()) ** 2))
    if tss == 0 or rss <= 1e-12 * tss:
        raise AdjustmentRefused("the arm and covariates explain the outcome exactly: no residual to judge it by")
    sigma2 = rss / df
    cov = sigma2 * np.linalg.inv(design.T @ design)
    se = math.sqrt(float(cov[1, 1]))
    est = float(beta[1])
    t = est / se if se > 0 else math.inf
    p = float(2.0 * sps.t.sf(abs(t), df))
    return AdjustedFit(
        estimate=est,
        stderr=se,
        df=df,
        p_value=p,
        coefficients={SHORT_NAME.get(c, c): float(b) for c, b in zip(data.covariates, beta[2:], strict=True)},
        residual_sd=math.sqrt(sigma2),
        r2=1.0 - rss / tss,
    )


def welch_interval(a: Values, b: Values, confidence: float) -> tuple[float, tuple[float, float] | None]:
    """mean(a) − mean(b) with Welch's t interval (for the in-function time shown beside the estimate)."""
    xa, xb = as_array(a), as_array(b)
    if xa.size < 2 or xb.size < 2:
        return (float(np.mean(xa) - np.mean(xb)) if xa.size and xb.size else math.nan, None)
    d = float(np.mean(xa) - np.mean(xb))
    va, vb = float(np.var(xa, ddof=1)) / xa.size, float(np.var(xb, ddof=1)) / xb.size
    se = math.sqrt(va + vb)
    if se == 0:
        return (d, (d, d))
    df = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    t = float(sps.t.ppf(0.5 + confidence / 2.0, df))
    return (d, (d - t * se, d + t * se))
