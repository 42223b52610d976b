"""A stopping rule that stays valid when the run looks at its own data: keep adding interleaved
blocks until every headline comparison is known to a stated precision, or the budget runs out.

What is estimated. For a comparison a − b the data are the per-block paired differences
d_t = median(a in block t) − median(b in block t) (`compare.paired_blocks`): both arms of a block
ran close together, so drift of the machine cancels. The estimand is the mean of d.

The interval. A fixed-n confidence interval recomputed after every round and used to decide when
to stop loses its coverage (in the simulated A/A streams of the tests, a 95 % interval looked at
every 10 blocks from block 20 to 300 "finds" a difference in 29 % of the runs, after every block
in 37 %). Instead each comparison gets an asymptotic confidence sequence (Waudby-Smith, Arbour,
Sinha, Kennedy and Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences",
Ann. Statist. 2024; the Robbins normal-mixture boundary of Howard et al. 2021): after t blocks

    mean_t ± sd_t · sqrt( 2(tρ² + 1) / (t²ρ²) · log( sqrt(tρ² + 1) / alpha' ) )

with sd_t the sample standard deviation (n − 1) of d_1..d_t. It covers the mean at all t at once
with probability ≥ 1 − alpha' (asymptotically), so the run may stop whenever it likes.

- ρ is fixed before the run (choosing it from the data would void the guarantee). It makes the
  boundary tightest at t* blocks: ρ² = (−W₋₁(−alpha'²/e) − 1) / t* (Lambert W, lower branch).
  Default t* = 100 blocks, the order of a thesis-scale run (1000 cold starts in blocks of 5 is
  200); the interval is valid for any ρ, only its width elsewhere changes: against the best
  boundary for each t it is 10 % wider at t = 20, 1 % at t = 50 or 200, 3 % at 400, 7 % at 1000.
- The boundary is asymptotic; with fewer than `min_blocks` (default 20) blocks the rule reports no
  interval and cannot stop on precision. Simulated A/A streams (tests) keep the error at any look
  below alpha from there on, for skewed and heavy-tailed differences.
- h headline comparisons are covered together: each gets alpha' = alpha / h (Bonferroni).
- At t* the half-width is about 3.0 standard errors where a fixed-n 95 % interval has 1.96: the
  price of being allowed to stop at any time.

The rule. After each round of blocks the executor calls `StoppingRule.update`; the run stops with
reason `precision_reached` when every headline comparison's half-width is within the precision P
(`5ms` absolute, or `2%` of that comparison's reference median), else `max_time` when another round
like the last one would overrun the time budget, else `max_cold_starts` when the cold-start budget
is spent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.special import lambertw

from .familywise import FamilyResult
from .stats import Values, as_array, json_safe

DEFAULT_ALPHA = 0.05
DEFAULT_TARGET_BLOCKS = 100
DEFAULT_MIN_BLOCKS = 20

PRECISION_REACHED = "precision_reached"
MAX_TIME = "max_time"
MAX_COLD_STARTS = "max_cold_starts"
STOP_REASONS = (PRECISION_REACHED, MAX_TIME, MAX_COLD_STARTS)

METHOD = "asymptotic confidence sequence, normal-mixture boundary (Waudby-Smith et al. 2024)"

# Units a precision may be given in, as milliseconds.
_TIME_UNITS_MS: dict[str, float] = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1000.0}
# Metric name suffix -> its unit (connect_us is in microseconds, lifecycle_ms in milliseconds).
_METRIC_UNITS = {"_ms": "ms", "_us": "us"}
_DURATION_UNITS_S = {"h": 3600.0, "m": 60.0, "s": 1.0}


def unit_of_metric(metric: str) -> str:
    for suffix, unit in _METRIC_UNITS.items():
        if metric.endswith(suffix):
            return unit
    raise ValueError(f"metric {metric!r} has no time unit suffix (_ms or _us)")


@dataclass(frozen=True)
class Precision:
    """The half-width a comparison must reach: `value` milliseconds, or a fraction of the
    comparison's reference median when `relative`."""

    text: str
    value: float
    relative: bool

    def target(self, unit: str, reference_median: float | None) -> float:
        """The precision in the comparison's unit (ms or us); NaN if relative and no reference median."""
        if self.relative:
            if reference_median is None or not math.isfinite(reference_median) or reference_median <= 0:
                return math.nan
            return self.value * reference_median
        if unit not in _TIME_UNITS_MS:
            raise ValueError(f"unknown unit {unit!r}; expected one of {', '.join(_TIME_UNITS_MS)}")
        return self.value / _TIME_UNITS_MS[unit]


_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"


def parse_precision(text: str) -> Precision:
    """`2%` (of each comparison's reference median), `5ms`, `500us`, `0.005s`; spaces allowed."""
    raw = str(text).strip()
    m = re.fullmatch(_NUMBER + r"\s*(%|ms|us|µs|s)", raw)
    if not m:
        raise ValueError(
            "precision must be a percentage of the reference median (e.g. 2%) or a time (e.g. 5ms, 500us), "
            f"got {text!r}"
        )
    number, unit = float(m.group(1)), m.group(2)
    if number <= 0:
        raise ValueError(f"precision must be greater than zero, got {text!r}")
    if unit == "%":
        if number >= 100:
            raise ValueError(f"a relative precision must be below 100%, got {text!r}")
        return Precision(raw, number / 100.0, True)
    return Precision(raw, number * _TIME_UNITS_MS[unit], False)


def parse_duration(text: str) -> float:
    """Seconds from `600`, `90s`, `10m`, `1.5h`, `1h30m`, `2m30s`."""
    raw = str(text).strip().lower()
    if re.fullmatch(_NUMBER, raw):
        seconds = float(raw)
    else:
        parts = re.findall(_NUMBER + r"\s*([hms])", raw)
        rebuilt = "".join(n + u for n, u in parts)
        units = [u for _n, u in parts]
        if not parts or rebuilt != raw.replace(" ", "") or len(set(units)) != len(units):
            raise ValueError(f"duration must look like 600, 90s, 10m, 1.5h or 1h30m, got {text!r}")
        seconds = sum(float(n) * _DURATION_UNITS_S[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"duration must be greater than zero, got {text!r}")
    return seconds


@dataclass(frozen=True)
class StoppingOptions:
    precision: Precision | None
    max_time_s: float | None
    max_cold_starts: int | None


def parse_stopping_options(
    precision: str | None, max_time: str | None, max_cold_starts: int | None = None
) -> StoppingOptions:
    """--bench-precision / --bench-max-time (and a cold-start cap), validated together: a precision
    needs a budget, since it may never be reached."""
    try:
        p = parse_precision(precision) if precision else None
    except ValueError as exc:
        raise ValueError(f"--bench-precision: {exc}") from None
    try:
        t = parse_duration(max_time) if max_time else None
    except ValueError as exc:
        raise ValueError(f"--bench-max-time: {exc}") from None
    if max_cold_starts is not None and max_cold_starts < 1:
        raise ValueError(f"the cold-start budget must be at least 1, got {max_cold_starts}")
    if p is not None and t is None and max_cold_starts is None:
        raise ValueError(
            "--bench-precision needs --bench-max-time DURATION (or a cold-start budget): "
            "the precision may never be reached"
        )
    return StoppingOptions(p, t, max_cold_starts)


def rho2_for(target_blocks: float, alpha: float) -> float:
    """ρ² that makes the two-sided normal-mixture boundary tightest at `target_blocks`."""
    if target_blocks <= 0:
        raise ValueError(f"target blocks must be positive, got {target_blocks}")
    return float((-lambertw(-(alpha**2) / math.e, k=-1).real - 1.0) / target_blocks)


def boundary(t: np.ndarray | float, rho2: float, alpha: float) -> np.ndarray:
    """Half-width of the confidence sequence per unit standard deviation after t observations."""
    t = np.asarray(t, dtype=float)
    return np.sqrt(2.0 * (t * rho2 + 1.0) / (t * t * rho2) * np.log(np.sqrt(t * rho2 + 1.0) / alpha))


def confidence_sequence_path(x: np.ndarray, alpha: float, rho2: float) -> tuple[np.ndarray, np.ndarray]:
    """(running mean, half-width) after each observation along the last axis; vectorised.
    The half-width is infinite after one observation (no standard deviation yet)."""
    t = np.arange(1, x.shape[-1] + 1, dtype=float)
    s1 = np.cumsum(x, axis=-1)
    s2 = np.cumsum(x * x, axis=-1)
    mean = s1 / t
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(t > 1, np.maximum(s2 - s1 * s1 / t, 0.0) / (t - 1.0), np.inf)
    return mean, np.sqrt(var) * boundary(t, rho2, alpha)


def confidence_sequence(diffs: Values, alpha: float, rho2: float) -> tuple[float, float]:
    """(mean, half-width) of the confidence sequence at the current number of observations."""
    d = as_array(diffs)
    if d.size < 2:
        return (float(d.mean()) if d.size else math.nan, math.inf)
    mean = float(d.mean())
    return (mean, float(np.std(d, ddof=1) * boundary(d.size, rho2, alpha)))


def always_valid_p(diffs: Values, rho2: float) -> float:
    """The smallest alpha whose confidence sequence (same ρ) excludes 0 now: solving
    |mean| = sd·boundary(t, ρ², alpha) for alpha gives sqrt(tρ² + 1)·exp(−mean²t²ρ² / (2sd²(tρ² + 1))).
    P(it is ever ≤ alpha under mean 0) ≤ alpha, like the sequence itself; it is ≤ alpha exactly
    when the sequence at level alpha excludes 0."""
    d = as_array(diffs)
    if d.size < 2:
        return 1.0
    t, mean, sd = float(d.size), float(d.mean()), float(np.std(d, ddof=1))
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    v = t * rho2 + 1.0
    return min(1.0, math.sqrt(v) * math.exp(-(mean**2) * t * t * rho2 / (2.0 * sd * sd * v)))


def family_result(status: ComparisonStatus, *, alpha: float, family_size: int) -> FamilyResult:
    """A headline comparison of a run stopped by the rule, as a family-wise finding: its interval is
    the confidence sequence at alpha/h (the only interval still valid after optional stopping),
    p_adjusted the Bonferroni-adjusted anytime-valid p, significant iff the interval excludes 0."""
    p_adj = min(1.0, status.p_value * family_size) if math.isfinite(status.p_value) else math.nan
    ci = status.interval
    return FamilyResult(
        name=status.name,
        design="paired-blocks",
        estimator="mean of per-block differences (confidence sequence)",
        unit=status.unit,
        n={"blocks": status.blocks},
        estimate=status.estimate,
        p_value=status.p_value,
        p_adjusted=p_adj,
        family_size=family_size,
        alpha=alpha,
        confidence_adjusted=1.0 - alpha / family_size,
        ci_adjusted=ci,
        significant=ci is not None and (ci[0] > 0 or ci[1] < 0),
        notes=[] if ci is not None else ["too few blocks for the confidence sequence"],
    )


@dataclass(frozen=True)
class Look:
    """What the executor knows about one headline comparison after a round."""

    diffs: Values  # per-block paired differences a − b, one per block so far
    reference_median: float | None = None  # median of the reference arm b, for a relative precision
    unit: str = "ms"


@dataclass(frozen=True)
class ComparisonStatus:
    name: str
    unit: str
    blocks: int
    estimate: float
    interval: tuple[float, float] | None
    half_width: float
    target: float
    reached: bool
    # Anytime-valid p-value of "mean 0" for this comparison alone (NaN below min_blocks).
    p_value: float = math.nan
    alpha_each: float = math.nan


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    reason: str | None
    comparisons: dict[str, ComparisonStatus]
    cold_starts: int
    elapsed_s: float
    looks: int

    @property
    def reached(self) -> list[str]:
        return [name for name, c in self.comparisons.items() if c.reached]

    def progress_text(self) -> str:
        """One line for the live progress: current half-width against the target, per comparison."""
        parts = []
        for c in self.comparisons.values():
            hw = "n/a" if not math.isfinite(c.half_width) else f"{c.half_width:.3g}"
            target = "n/a" if not math.isfinite(c.target) else f"{c.target:.3g}"
            parts.append(f"{c.name} ±{hw}/{target} {c.unit}{' ✓' if c.reached else ''} ({c.blocks} blocks)")
        line = "precision: " + "; ".join(parts)
        return line + (f" — stop: {self.reason}" if self.stop else "")


@dataclass
class StoppingRule:
    """Decides after each round whether the run has reached its precision or spent its budget."""

    precision: Precision | None
    max_time_s: float | None = None
    max_cold_starts: int | None = None
    alpha: float = DEFAULT_ALPHA
    min_blocks: int = DEFAULT_MIN_BLOCKS
    target_blocks: float = DEFAULT_TARGET_BLOCKS
    history: list[StopDecision] = field(default_factory=list)
    _last_elapsed: float = 0.0
    _longest_round_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.min_blocks < 2:
            raise ValueError(f"min_blocks must be at least 2, got {self.min_blocks}")
        if self.precision is None and self.max_time_s is None and self.max_cold_starts is None:
            raise ValueError("a stopping rule needs a precision, a time budget or a cold-start budget")

    @classmethod
    def from_options(cls, options: StoppingOptions, **kwargs: Any) -> StoppingRule:
        return cls(options.precision, options.max_time_s, options.max_cold_starts, **kwargs)

    def alpha_each(self, comparisons: int) -> float:
        return self.alpha / max(1, comparisons)

    def status(self, name: str, look: Look, alpha_each: float) -> ComparisonStatus:
        d = as_array(look.diffs)
        rho2 = rho2_for(self.target_blocks, alpha_each)
        mean, half = confidence_sequence(d, alpha_each, rho2)
        if d.size < self.min_blocks:
            half = math.inf
        target = self.precision.target(look.unit, look.reference_median) if self.precision else math.nan
        interval = (mean - half, mean + half) if math.isfinite(half) else None
        p = always_valid_p(d, rho2) if d.size >= self.min_blocks else math.nan
        return ComparisonStatus(
            name=name,
            unit=look.unit,
            blocks=int(d.size),
            estimate=mean,
            interval=interval,
            half_width=half,
            target=target,
            reached=bool(math.isfinite(half) and math.isfinite(target) and half <= target),
            p_value=p,
            alpha_each=alpha_each,
        )

    def update(self, looks: Mapping[str, Look], *, cold_starts: int, elapsed_s: float) -> StopDecision:
        """Call after every round with all headline comparisons; `cold_starts` counts every cold start
        of the run so far (all arms), `elapsed_s` the run's wall time so far."""
        if not looks:
            raise ValueError("the stopping rule needs at least one headline comparison")
        alpha_each = self.alpha_each(len(looks))
        statuses = {name: self.status(name, look, alpha_each) for name, look in looks.items()}
        self._longest_round_s = max(self._longest_round_s, elapsed_s - self._last_elapsed)
        self._last_elapsed = elapsed_s
        reason = None
        if self.precision is not None and all(s.reached for s in statuses.values()):
            reason = PRECISION_REACHED
        elif self.max_time_s is not None and elapsed_s + self._longest_round_s > self.max_time_s:
            reason = MAX_TIME
        elif self.max_cold_starts is not None and cold_starts >= self.max_cold_starts:
            reason = MAX_COLD_STARTS
        decision = StopDecision(
            stop=reason is not None,
            reason=reason,
            comparisons=statuses,
            cold_starts=cold_starts,
            elapsed_s=elapsed_s,
            looks=len(self.history) + 1,
        )
        self.history.append(decision)
        return decision

    def family_results(self, decision: StopDecision | None = None) -> dict[str, FamilyResult]:
        """The headline comparisons of `decision` (default: the last) as family-wise findings."""
        decision = decision or (self.history[-1] if self.history else None)
        if decision is None:
            return {}
        h = len(decision.comparisons)
        return {n: family_result(c, alpha=self.alpha, family_size=h) for n, c in decision.comparisons.items()}

    def record(self) -> dict[str, Any]:
        """For summary.json: the rule, the last decision, which comparisons reached the precision."""
        last = self.history[-1] if self.history else None
        n = len(last.comparisons) if last else 0
        out: dict[str, Any] = {
            "rule": {
                "precision": self.precision.text if self.precision else None,
                "precision_relative": self.precision.relative if self.precision else None,
                "max_time_s": self.max_time_s,
                "max_cold_starts": self.max_cold_starts,
                "alpha": self.alpha,
                "alpha_each": self.alpha_each(n) if n else None,
                "method": METHOD,
                "estimand": "mean of per-block paired differences (median a − median b per block)",
                "target_blocks": self.target_blocks,
                "rho2": rho2_for(self.target_blocks, self.alpha_each(n)) if n else None,
                "min_blocks": self.min_blocks,
            },
            "stopped": bool(last and last.stop),
            "stop_reason": last.reason if last else None,
            "looks": len(self.history),
            "cold_starts": last.cold_starts if last else 0,
            "elapsed_s": last.elapsed_s if last else 0.0,
            "reached": last.reached if last else [],
            "comparisons": {name: asdict(c) for name, c in last.comparisons.items()} if last else {},
        }
        return json_safe(out)  # type: ignore[no-any-return]


def headline_looks(
    diffs_by_comparison: Mapping[str, Sequence[float]],
    reference_medians: Mapping[str, float],
    metrics: Mapping[str, str],
) -> dict[str, Look]:
    """Looks from plain mappings {comparison: per-block diffs}, {comparison: reference median},
    {comparison: metric name} (the unit follows the metric's suffix)."""
    return {
        name: Look(diffs, reference_medians.get(name), unit_of_metric(metrics[name]))
        for name, diffs in diffs_by_comparison.items()
    }
