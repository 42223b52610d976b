"""Sample-size planning from the run's own variance: how many cold starts per arm would resolve a
difference of a given size (by default the connection-time saving) at a chosen power.

Normal approximation for a two-sided test of a difference in means at level alpha (pass the
family-wise level, alpha/k, when the comparison is one of k findings):

    two samples:     n per arm = (z_{1−alpha/2} + z_{power})² · (sd_a² + sd_b²) / d²
    paired blocks:   blocks    = (z_{1−alpha/2} + z_{power})² · sd_diff² / d²,
                     cold starts per arm = blocks × cold starts per arm in a block

The run's findings use rank-based (Hodges–Lehmann / Mann–Whitney) intervals. Their asymptotic
efficiency relative to the mean comparison is 3/π ≈ 0.955 for normal data, above 1 for the heavy
right tails of latencies, and never below 0.864 (Hodges and Lehmann 1956): at worst they need
1/0.864 ≈ 1.16 times the planned number. The figure is a plan, not a promise — the standard
deviations are themselves estimates from this run.

The difference is signed (a saving or a cost, as observed) and a plan never states more than
MAX_PLANNED cold starts per arm: an effect that small, or none at all, is "no effect to resolve".
The `adjusted` design plans the adjusted lifecycle estimator (adjusted.py): two samples with the fit's
residual SD in both arms.

For the stopping rule, `blocks_for_precision` answers the companion question: how many blocks until
the confidence sequence's half-width is within a precision, at this run's per-block spread.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from .sequential import DEFAULT_ALPHA, DEFAULT_TARGET_BLOCKS, boundary, rho2_for
from .stats import Values, as_array, json_safe

DEFAULT_POWER = 0.80
# A plan above this many cold starts per arm is no plan: the effect is too small (or absent) to resolve.
MAX_PLANNED = 10**7
# Pitman efficiency of the rank tests relative to the t test: the lower bound over all distributions.
RANK_EFFICIENCY_BOUND = 0.864
TWO_SAMPLE = "two-sample"
PAIRED = "paired-blocks"
ADJUSTED = "adjusted"
CONNECT_LABEL = "the difference in median connect time"


def _check(difference: float, alpha: float, power: float, *, zero_ok: bool = False) -> None:
    if not math.isfinite(difference) or (difference == 0 and not zero_ok):
        raise ValueError(f"the difference to resolve must be a non-zero number, got {difference}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must be between 0 and 1, got {power}")


def _z_sum(alpha: float, power: float) -> float:
    return float(sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))


def cold_starts_per_arm(difference: float, sd_a: float, sd_b: float, *, alpha: float, power: float) -> int:
    """Two independent samples: n per arm (normal approximation, rounded up)."""
    _check(difference, alpha, power)
    if not (math.isfinite(sd_a) and math.isfinite(sd_b)) or sd_a < 0 or sd_b < 0:
        raise ValueError(f"standard deviations must be finite and non-negative, got {sd_a}, {sd_b}")
    return max(2, math.ceil(_z_sum(alpha, power) ** 2 * (sd_a**2 + sd_b**2) / difference**2))


def blocks_needed(difference: float, sd_diff: float, *, alpha: float, power: float) -> int:
    """Paired per-block differences: number of blocks (normal approximation, rounded up)."""
    _check(difference, alpha, power)
    if not math.isfinite(sd_diff) or sd_diff < 0:
        raise ValueError(f"the standard deviation must be finite and non-negative, got {sd_diff}")
    return max(2, math.ceil(_z_sum(alpha, power) ** 2 * sd_diff**2 / difference**2))


def connection_saving_ms(direct_connect_us: Values, socket_connect_us: Values) -> float:
    """median(direct connect) − median(socket connect), converted from µs to ms."""
    a, b = as_array(direct_connect_us), as_array(socket_connect_us)
    if a.size == 0 or b.size == 0:
        return math.nan
    return float(np.median(a) - np.median(b)) / 1000.0


def _capped(n: int) -> int | None:
    return n if n <= MAX_PLANNED else None


@dataclass(frozen=True)
class SampleSizePlan:
    metric: str
    design: str
    difference: float  # signed: positive a saving, negative a cost (reference − scenario)
    difference_label: str
    alpha: float
    power: float
    sd: dict[str, float]
    cold_starts_per_arm: int | None  # None: no effect to resolve (zero, or more than MAX_PLANNED needed)
    cold_starts_per_arm_rank_bound: int | None
    blocks: int | None
    cold_starts_per_arm_run: int
    method: str = "normal approximation for a difference in means"

    @property
    def resolved_by_this_run(self) -> bool:
        return self.cold_starts_per_arm is not None and self.cold_starts_per_arm_run >= self.cold_starts_per_arm

    @property
    def no_effect_to_resolve(self) -> bool:
        return self.cold_starts_per_arm is None

    def sentence(self, unit: str = "ms") -> str:
        sds = " and ".join(f"{v:.1f} {unit}" for v in self.sd.values())
        spread = {PAIRED: "per-block difference SD ", ADJUSTED: "residual SD of the adjusted fit "}.get(
            self.design, "SDs "
        ) + sds
        kind = "saving" if self.difference > 0 else "cost" if self.difference < 0 else "difference"
        what = f"a {kind} of {abs(self.difference):.2f} {unit} ({self.difference_label}) on {self.metric}"
        if self.cold_starts_per_arm is None:
            return (
                f"No effect to resolve: {what} would take more than {MAX_PLANNED:.0e} cold starts per arm at "
                f"{self.power:.0%} power and two-sided alpha {self.alpha:.2g} with this run's {spread}."
            ).replace("1e+07", "10^7")
        blocks = f" ({self.blocks} blocks)" if self.blocks else ""
        verdict = (
            "this run had enough"
            if self.resolved_by_this_run
            else f"this run had {self.cold_starts_per_arm_run} per arm"
        )
        bound = (
            f"the rank-based intervals need at most {self.cold_starts_per_arm_rank_bound}"
            if self.cold_starts_per_arm_rank_bound is not None and self.design != ADJUSTED
            else ""
        )
        return (
            f"Resolving {what} at {self.power:.0%} power and two-sided alpha {self.alpha:.2g} takes about "
            f"{self.cold_starts_per_arm} cold starts per arm{blocks} with this run's {spread}; {verdict} "
            f"({self.method}{'; ' + bound if bound else ''})."
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = json_safe(
            asdict(self) | {"resolved_by_this_run": self.resolved_by_this_run, "sentence": self.sentence()}
        )
        return d


def _rank_bound(n: int | None) -> int | None:
    return None if n is None else _capped(math.ceil(n / RANK_EFFICIENCY_BOUND))


def _per_arm(difference: float, variance_sum: float, alpha: float, power: float) -> int | None:
    """Cold starts per arm (or blocks) for `difference` with the summed variance; None above MAX_PLANNED."""
    if difference == 0:
        return None
    n = _z_sum(alpha, power) ** 2 * variance_sum / difference**2
    return max(2, math.ceil(n)) if n <= MAX_PLANNED else None


def plan_two_sample(
    a: Values,
    b: Values,
    difference: float,
    *,
    metric: str,
    difference_label: str = CONNECT_LABEL,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
) -> SampleSizePlan:
    """From two samples of one metric: n per arm to resolve `difference` (same unit as the samples, signed);
    no count (no effect to resolve) for a zero difference or above MAX_PLANNED."""
    _check(difference, alpha, power, zero_ok=True)
    xa, xb = as_array(a), as_array(b)
    if xa.size < 2 or xb.size < 2:
        raise ValueError("planning needs at least two values per arm to estimate the spread")
    sd_a, sd_b = float(np.std(xa, ddof=1)), float(np.std(xb, ddof=1))
    n = _per_arm(difference, sd_a**2 + sd_b**2, alpha, power)
    return SampleSizePlan(
        metric=metric,
        design=TWO_SAMPLE,
        difference=difference,
        difference_label=difference_label,
        alpha=alpha,
        power=power,
        sd={"a": sd_a, "b": sd_b},
        cold_starts_per_arm=n,
        cold_starts_per_arm_rank_bound=_rank_bound(n),
        blocks=None,
        cold_starts_per_arm_run=int(min(xa.size, xb.size)),
    )


def plan_paired(
    block_diffs: Values,
    difference: float,
    *,
    metric: str,
    per_block: int,
    difference_label: str = CONNECT_LABEL,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
) -> SampleSizePlan:
    """From per-block paired differences: blocks (and cold starts per arm, `per_block` per block)."""
    _check(difference, alpha, power, zero_ok=True)
    d = as_array(block_diffs)
    if d.size < 2:
        raise ValueError("planning needs at least two blocks to estimate the spread")
    if per_block < 1:
        raise ValueError(f"cold starts per arm in a block must be at least 1, got {per_block}")
    sd = float(np.std(d, ddof=1))
    blocks = _per_arm(difference, sd**2, alpha, power)
    per_arm = _capped(blocks * per_block) if blocks is not None else None
    bound = _rank_bound(blocks)
    return SampleSizePlan(
        metric=metric,
        design=PAIRED,
        difference=difference,
        difference_label=difference_label,
        alpha=alpha,
        power=power,
        sd={"diff": sd},
        cold_starts_per_arm=per_arm,
        cold_starts_per_arm_rank_bound=_capped(bound * per_block) if bound is not None and per_arm else None,
        blocks=blocks if per_arm is not None else None,
        cold_starts_per_arm_run=int(d.size) * per_block,
    )


def plan_adjusted(
    residual_sd: float,
    difference: float,
    *,
    metric: str,
    cold_starts_per_arm_run: int,
    difference_label: str = CONNECT_LABEL,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
) -> SampleSizePlan:
    """For the adjusted lifecycle estimator: n per arm with the fit's residual SD in both arms."""
    _check(difference, alpha, power, zero_ok=True)
    if not math.isfinite(residual_sd) or residual_sd < 0:
        raise ValueError(f"the residual SD must be finite and non-negative, got {residual_sd}")
    n = _per_arm(difference, 2 * residual_sd**2, alpha, power)
    return SampleSizePlan(
        metric=metric,
        design=ADJUSTED,
        difference=difference,
        difference_label=difference_label,
        alpha=alpha,
        power=power,
        sd={"residual": residual_sd},
        cold_starts_per_arm=n,
        cold_starts_per_arm_rank_bound=None,
        blocks=None,
        cold_starts_per_arm_run=cold_starts_per_arm_run,
        method="normal approximation for the adjusted difference in means",
    )


def blocks_for_precision(
    sd_diff: float,
    precision: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    target_blocks: float = DEFAULT_TARGET_BLOCKS,
    max_blocks: int = 1_000_000,
) -> int | None:
    """Fewest blocks at which the confidence sequence's half-width sd·boundary(t) is within `precision`
    (expected, taking the spread as known); None if not within `max_blocks`."""
    if precision <= 0 or not math.isfinite(precision):
        raise ValueError(f"precision must be a positive number, got {precision}")
    if sd_diff == 0:
        return 2
    t = np.arange(2, max_blocks + 1, dtype=float)
    ok = sd_diff * boundary(t, rho2_for(target_blocks, alpha), alpha) <= precision
    # The boundary falls monotonically in t, so the first True is the answer.
    return int(t[ok.argmax()]) if ok.any() else None
