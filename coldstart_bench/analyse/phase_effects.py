"""The lower-variance estimator: the effect on start→die next to the whole lifecycle, and a check
that the container engine's own phases did not differ between the arms.

Why. The connection method (direct or injected) can only change what happens after the container
has started: `start_to_die_ms`. Docker's create→start and die→destroy are the same work in both
arms and carry most of the lifecycle's variance (on the reference machine SD ≈ 33 ms of a
lifecycle SD ≈ 50 ms, against ≈ 18 ms for start→die). Comparing start→die therefore estimates the
same effect — lifecycle = create→start + start→die + die→destroy, and the outer two do not depend
on the arm — with roughly a third of the variance, i.e. a third of the cold starts for the same
interval width.

That argument holds only if the engine phases really do not differ between the arms; the check
tests each of create→start and die→destroy with Mann–Whitney U, Holm-adjusted over every pair and
phase checked, and says so when one differs. Not rejecting is no proof of equality: it means the
run found no difference at its sample size.

Per-block paired differences (`compare.paired_blocks`) are used whenever the run was interleaved
with enough blocks; otherwise the two samples are compared directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .compare import MIN_BLOCKS_PAIRED, holm, mann_whitney, paired_blocks
from .familywise import MIN_N_TWO_SAMPLE, FamilyComparison, FamilyResult, saving_text
from .stats import Values, as_array, json_safe

LIFECYCLE = "lifecycle_ms"
RUN_PHASE = "start_to_die_ms"
ENGINE_PHASES: tuple[str, ...] = ("create_to_start_ms", "die_to_destroy_ms")
EFFECT_METRICS: tuple[str, ...] = (LIFECYCLE, RUN_PHASE)

# {scenario: {metric: values}} and {scenario: {metric: {block: values}}}
ValuesByScenario = Mapping[str, Mapping[str, Values]]
BlocksByScenario = Mapping[str, Mapping[str, Mapping[int, Values]]]


def comparison_name(slow: str, fast: str, metric: str) -> str:
    return f"{slow} − {fast} {metric}"


def block_differences(slow: str, fast: str, metric: str, blocks: BlocksByScenario | None) -> list[float] | None:
    """Per-block median(slow) − median(fast), or None when fewer than MIN_BLOCKS_PAIRED blocks hold both."""
    if blocks is None or slow not in blocks or fast not in blocks:
        return None
    a, b = blocks[slow].get(metric), blocks[fast].get(metric)
    if not a or not b:
        return None
    res = paired_blocks(slow, a, fast, b, metric)
    if res is None or res["blocks"] < MIN_BLOCKS_PAIRED:
        return None
    return [float(x) for x in res["diffs"]]


def effect_comparisons(
    slow: str,
    fast: str,
    values: ValuesByScenario,
    blocks: BlocksByScenario | None = None,
    metrics: Sequence[str] = EFFECT_METRICS,
) -> list[FamilyComparison]:
    """slow − fast on the lifecycle and on start→die, ready to join the run's family
    (`familywise.family_findings`): paired per block when interleaved, else two samples."""
    out = []
    for metric in metrics:
        name = comparison_name(slow, fast, metric)
        diffs = block_differences(slow, fast, metric, blocks)
        if diffs is not None:
            out.append(FamilyComparison(name, paired_diffs=diffs, unit="ms"))
            continue
        a, b = as_array(values.get(slow, {}).get(metric, [])), as_array(values.get(fast, {}).get(metric, []))
        if a.size and b.size:
            out.append(FamilyComparison(name, a=a, b=b, unit="ms"))
    return out


def _sd(values: ValuesByScenario, scenario: str, metric: str) -> float:
    arr = as_array(values.get(scenario, {}).get(metric, []))
    return float(np.std(arr, ddof=1)) if arr.size > 1 else math.nan


def side_by_side_text(
    slow: str,
    fast: str,
    results: Mapping[str, FamilyResult],
    values: ValuesByScenario,
    *,
    subject: str = "Injection",
) -> str | None:
    """One sentence pair: the effect on start→die (what the connection method can change) and on the
    lifecycle, each worded by `familywise.saving_text`, with both metrics' spread.
    `results` is keyed by `comparison_name`; None when either result is missing."""
    run = results.get(comparison_name(slow, fast, RUN_PHASE))
    life = results.get(comparison_name(slow, fast, LIFECYCLE))
    if run is None or life is None:
        return None

    def pooled_sd(metric: str) -> float:
        return math.sqrt(np.nanmean([_sd(values, slow, metric) ** 2, _sd(values, fast, metric) ** 2]))

    sd_run, sd_life = pooled_sd(RUN_PHASE), pooled_sd(LIFECYCLE)
    spread = f"SD {sd_run:.1f} ms against {sd_life:.1f} ms for the lifecycle" if math.isfinite(sd_run) else ""
    run_text = saving_text(run, subject=f"On start→die ({spread}), {subject.lower()}", slow=slow, fast=fast)
    life_text = saving_text(life, subject=f"On the whole lifecycle, {subject.lower()}", slow=slow, fast=fast)
    return f"{run_text} {life_text}"


@dataclass
class PhaseTest:
    phase: str
    median_a: float
    median_b: float
    p_value: float
    p_adjusted: float = math.nan
    differs: bool = False


@dataclass
class EnginePhaseCheck:
    """Whether the engine's create→start and die→destroy differ between scenarios a and b."""

    a: str
    b: str
    alpha: float
    tests: list[PhaseTest] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def differ(self) -> bool:
        return any(t.differs for t in self.tests)

    @property
    def sentence(self) -> str | None:
        """Said only when a phase differs: the start→die estimate then no longer isolates the method."""
        differing = [t for t in self.tests if t.differs]
        if not differing:
            return None
        parts = [
            f"{t.phase} (median {t.median_a:.1f} ms vs {t.median_b:.1f} ms, Holm-adjusted p = {t.p_adjusted:.2g})"
            for t in differing
        ]
        return (
            f"The container engine's phases differ between {self.a} and {self.b}: {'; '.join(parts)}. "
            "The connection method cannot change these, so something else differed between the arms; "
            "neither the lifecycle nor the start→die comparison isolates the connection method in this run."
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = json_safe(asdict(self) | {"differ": self.differ, "sentence": self.sentence})
        return d


def engine_phase_checks(
    pairs: Sequence[tuple[str, str]], values: ValuesByScenario, *, alpha: float = 0.05
) -> list[EnginePhaseCheck]:
    """Mann–Whitney U per pair and engine phase, Holm-adjusted over all of them together."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    checks = []
    for a_name, b_name in pairs:
        check = EnginePhaseCheck(a_name, b_name, alpha)
        for phase in ENGINE_PHASES:
            xa = as_array(values.get(a_name, {}).get(phase, []))
            xb = as_array(values.get(b_name, {}).get(phase, []))
            if min(xa.size, xb.size) < MIN_N_TWO_SAMPLE:
                check.notes.append(f"{phase}: fewer than {MIN_N_TWO_SAMPLE} values on a side, not tested")
                continue
            _u, p = mann_whitney(xa, xb)
            check.tests.append(PhaseTest(phase, float(np.median(xa)), float(np.median(xb)), p))
        checks.append(check)
    tests = [t for c in checks for t in c.tests]
    for t, p_adj in zip(tests, holm([t.p_value for t in tests]), strict=True):
        t.p_adjusted = p_adj
        t.differs = math.isfinite(p_adj) and p_adj <= alpha
    return checks
