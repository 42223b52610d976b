"""What the report adds beside the findings for each headline pair (injection against its direct
twin): the lower-variance estimator (start→die next to the lifecycle, with the engine-phase check)
and the sample-size plan (cold starts per arm that would resolve the connection-time saving)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..catalogue import LIFECYCLE_SAVING, Catalogue
from .arms import arm_factors
from .familywise import FamilyResult
from .phase_effects import (
    LIFECYCLE,
    RUN_PHASE,
    BlocksByScenario,
    block_differences,
    comparison_name,
    engine_phase_checks,
    side_by_side_text,
)
from .sample_size import connection_saving_ms, plan_adjusted, plan_paired, plan_two_sample
from .stats import json_safe

ValuesByScenario = Mapping[str, Mapping[str, np.ndarray]]


def headline_saving_pairs(catalogue: Catalogue, present: list[str]) -> list[tuple[str, str]]:
    """(reference, scenario) of every headline reference with a lifecycle-saving finding that ran."""
    out = []
    for scenario in catalogue:
        if scenario.id not in present:
            continue
        for ref in catalogue.references_of(scenario.id, present):
            if ref.headline and any(f.kind == LIFECYCLE_SAVING for f in ref.findings):
                out.append((ref.scenario, scenario.id))
    return out


def control_pairs(catalogue: Catalogue, present: list[str]) -> list[tuple[str, str]]:
    return [
        (s.id, ref.scenario)
        for s in catalogue
        if s.id in present
        for ref in catalogue.references_of(s.id, present)
        if ref.control
    ]


def lower_variance(
    catalogue: Catalogue, values: ValuesByScenario, results: Mapping[str, FamilyResult], *, alpha: float
) -> dict[str, Any]:
    """Per headline pair the start→die effect beside the lifecycle effect, and the engine-phase check
    (create→start, die→destroy) for those pairs and the A/A control."""
    present = list(values)
    pairs = headline_saving_pairs(catalogue, present)
    texts = []
    for slow, fast in pairs:
        text = side_by_side_text(slow, fast, results, values)
        if text:
            texts.append({"scenarios": [slow, fast], "text": text})
    checks = engine_phase_checks(pairs + control_pairs(catalogue, present), values, alpha=alpha)
    return json_safe(
        {
            "metric": RUN_PHASE,
            "why": "the connection method can only change what happens after the container started (start→die); "
            "Docker's create→start and die→destroy are the same work in both arms and carry most of the variance",
            "side_by_side": texts,
            "engine_phases": [c.to_dict() for c in checks],
            "engine_phases_differ": any(c.differ for c in checks),
        }
    )


def _per_block(by_block: BlocksByScenario, scenario: str, metric: str) -> int:
    counts = [len(v) for v in by_block.get(scenario, {}).get(metric, {}).values()]
    return int(np.median(counts)) if counts else 1


def sample_size_plans(
    catalogue: Catalogue,
    values: ValuesByScenario,
    by_block: BlocksByScenario,
    family: Mapping[str, Any],
    *,
    alpha: float,
    power: float = 0.80,
    results: Mapping[str, FamilyResult] | None = None,
) -> list[dict[str, Any]]:
    """For each headline pair: cold starts per arm that would resolve a difference the size of the
    connection-time saving (median connect of the reference − of the scenario, signed: a negative one
    is a cost) at `power`, at the family-wise level alpha/k; on the lifecycle and on start→die, paired by
    block when interleaved, and with the adjusted lifecycle estimator's residual SD when the finding
    used it. A zero saving, or one that would need more than sample_size.MAX_PLANNED, has no count. Pairs
    whose arms differ in more than the connection method (arms.arm_factors) are not planned."""
    level = alpha / max(1, int(family.get("size") or 1))
    out = []
    for slow, fast in headline_saving_pairs(catalogue, list(values)):
        if arm_factors(catalogue, slow, fast):
            continue  # arms differing in more than the connection method: their connect times do not plan it
        saving = connection_saving_ms(values[slow].get("connect_us", []), values[fast].get("connect_us", []))
        if not math.isfinite(saving):
            continue
        adjusted = (results or {}).get(comparison_name(slow, fast, LIFECYCLE))
        if adjusted is not None and adjusted.design == "adjusted" and adjusted.details.get("residual_sd"):
            plan = plan_adjusted(
                float(adjusted.details["residual_sd"]),
                saving,
                metric=LIFECYCLE,
                cold_starts_per_arm_run=int(min(adjusted.n.values())),
                alpha=level,
                power=power,
            )
            out.append(plan.to_dict() | {"scenarios": [slow, fast]})
        for metric in (LIFECYCLE, RUN_PHASE):
            a, b = values[slow].get(metric), values[fast].get(metric)
            if a is None or b is None or a.size < 2 or b.size < 2:
                continue
            plans = [plan_two_sample(a, b, saving, metric=metric, alpha=level, power=power)]
            diffs = block_differences(slow, fast, metric, by_block)
            if diffs is not None:
                per_block = _per_block(by_block, fast, metric)
                plans.append(plan_paired(diffs, saving, metric=metric, per_block=per_block, alpha=level, power=power))
            for p in plans:
                out.append(p.to_dict() | {"scenarios": [slow, fast]})
    return json_safe(out)  # type: ignore[no-any-return]
