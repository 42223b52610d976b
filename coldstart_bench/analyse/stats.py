"""Descriptive statistics of one metric of one scenario, with bootstrap confidence intervals.

Pure functions over plain float sequences; nothing here knows about scenarios or files.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..samples import ALL_METRICS, Sample, group_by_scenario

# The statistics a rule or expectation may name; p50 is an alias of median.
STAT_NAMES: tuple[str, ...] = ("mean", "median", "p50", "p95", "p99", "variance", "stdev")
PERCENTILE_OF: dict[str, float] = {"median": 50.0, "p50": 50.0, "p95": 95.0, "p99": 99.0}

# A percentile is only worth reporting when samples exist beyond it: p95 needs >= 20, p99 >= 100.
MIN_N_FOR_PERCENTILE: dict[str, int] = {"p95": 20, "p99": 100}

DEFAULT_CONFIDENCE = 0.95

# Anything numpy turns into a 1-D float array.
Values = Sequence[float] | np.ndarray


def as_array(values: Values) -> np.ndarray:
    """Finite values only: NaN marks "not measured in this mode" and must not reach a statistic."""
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def statistic(values: Values, name: str) -> float:
    """One named statistic; NaN when it is undefined (empty input, variance of one value)."""
    arr = as_array(values)
    if name not in STAT_NAMES:
        raise ValueError(f"unknown statistic {name!r}; expected one of {', '.join(STAT_NAMES)}")
    if arr.size == 0:
        return math.nan
    if name == "mean":
        return float(np.mean(arr))
    if name in PERCENTILE_OF:
        return float(np.percentile(arr, PERCENTILE_OF[name]))
    if arr.size < 2:
        return math.nan
    # Sample (n-1) variance, as the thesis and scipy's tests use.
    var = float(np.var(arr, ddof=1))
    return var if name == "variance" else math.sqrt(var)


def stat_function(name: str) -> Callable[..., np.ndarray]:
    """A vectorised version of `statistic` along an axis, for the bootstrap."""
    if name not in STAT_NAMES:
        raise ValueError(f"unknown statistic {name!r}; expected one of {', '.join(STAT_NAMES)}")

    def fn(a: np.ndarray, axis: int = -1) -> np.ndarray:
        if name == "mean":
            return np.mean(a, axis=axis)
        if name in PERCENTILE_OF:
            return np.percentile(a, PERCENTILE_OF[name], axis=axis)
        if name == "variance":
            return np.var(a, ddof=1, axis=axis)
        return np.std(a, ddof=1, axis=axis)

    return fn


def bootstrap_ci(
    values: Values,
    stat: str,
    *,
    resamples: int = 2000,
    seed: int = 12345,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of one statistic (scipy.stats.bootstrap); None below 2 samples.

    The percentile method is used rather than BCa because BCa is undefined on the
    tied / constant samples that quantised timers produce.
    """
    arr = as_array(values)
    if arr.size < 2 or resamples < 1:
        return None
    if np.all(arr == arr[0]):
        value = float(arr[0]) if stat not in ("variance", "stdev") else 0.0
        return (value, value)
    from scipy import stats as sps  # deferred: scipy.stats costs ~1 s of every pytest start-up

    fn = stat_function(stat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.bootstrap(
            (arr,),
            fn,
            n_resamples=resamples,
            confidence_level=confidence,
            method="percentile",
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def bootstrap_distribution(values: Values, stat: str, *, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of one statistic."""
    arr = as_array(values)
    rng = np.random.default_rng(seed)
    return stat_function(stat)(arr[rng.integers(0, arr.size, size=(resamples, arr.size))])


def bootstrap_distribution_two(
    a: Values,
    b: Values,
    stat_a: str,
    stat_b: str,
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    resamples: int,
    seed: int,
) -> np.ndarray:
    """Bootstrap replicates of combine(stat_a(A*), stat_b(B*)), resampling A and B independently."""
    xa, xb = as_array(a), as_array(b)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, xa.size, size=(resamples, xa.size))
    ib = rng.integers(0, xb.size, size=(resamples, xb.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        return combine(stat_function(stat_a)(xa[ia]), stat_function(stat_b)(xb[ib]))


def percentile_interval(replicates: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return (math.nan, math.nan)
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return (float(lo), float(hi))


def iqr_fences(arr: np.ndarray, k: float) -> tuple[float, float]:
    q1, q3 = np.percentile(arr, [25.0, 75.0])
    iqr = q3 - q1
    return (float(q1 - k * iqr), float(q3 + k * iqr))


def count_outside(arr: np.ndarray, k: float) -> int:
    """Tukey outliers: beyond k×IQR from the quartiles (k=1.5 ordinary, k=3 extreme)."""
    if arr.size < 4:
        return 0
    lo, hi = iqr_fences(arr, k)
    return int(np.sum((arr < lo) | (arr > hi)))


def describe(
    values: Values,
    *,
    resamples: int = 2000,
    seed: int = 12345,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Any]:
    """Every figure summary.json holds for one metric of one scenario (JSON-safe: NaN -> None)."""
    arr = as_array(values)
    n = int(arr.size)
    out: dict[str, Any] = {"n": n}
    for name in ("mean", "median", "p50", "p95", "p99", "variance", "stdev"):
        out[name] = statistic(arr, name)
    if n:
        q1, q3 = np.percentile(arr, [25.0, 75.0])
        out.update(min=float(arr.min()), max=float(arr.max()), q1=float(q1), q3=float(q3), iqr=float(q3 - q1))
    else:
        out.update(min=None, max=None, q1=None, q3=None, iqr=None)
    out["cv"] = out["stdev"] / out["mean"] if n > 1 and out["mean"] else math.nan
    out["outliers"] = count_outside(arr, 1.5)
    out["extreme_outliers"] = count_outside(arr, 3.0)
    out["confidence"] = confidence
    out["ci_median"] = bootstrap_ci(arr, "median", resamples=resamples, seed=seed, confidence=confidence)
    out["ci_p95"] = bootstrap_ci(arr, "p95", resamples=resamples, seed=seed, confidence=confidence)
    return json_safe(out)


def json_safe(value: Any) -> Any:
    """Recursively turn NaN/inf into None and numpy scalars/tuples into plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, set | frozenset):
        return [json_safe(v) for v in sorted(value, key=str)]
    if value is None or isinstance(value, str):
        return value
    # Anything else (a Path in the environment, say) is reported as its text rather than crash the write.
    return str(value)


def values_by_scenario(
    samples: Sequence[Sample], metrics: Sequence[str] = ALL_METRICS
) -> dict[str, dict[str, np.ndarray]]:
    """{scenario: {metric: finite values of the successful samples}}, scenarios in run order."""
    return {name: {m: as_array(group.values(m)) for m in metrics} for name, group in group_by_scenario(samples).items()}
