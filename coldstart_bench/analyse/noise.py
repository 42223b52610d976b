"""Warnings about the quality of a run, in the spirit of `pyperf check`.

Each rule is stated in its warning so a reader can judge it:
- a percentile needs enough samples beyond it: p95 needs >= 20, p99 needs >= 100;
- stdev above 10 % of the mean is unstable (pyperf's threshold); connect times vary far more
  than lifecycles by nature, so they get 50 %;
- extreme outliers lie beyond 3×IQR from the quartiles;
- CPU contention: load average above the CPU count, or steal time above 5 %;
- failed cold starts are excluded from every statistic;
- drift: the first and second half of a scenario differ (Mann–Whitney U, p < 0.01);
- a disturbed block: in an interleaved run, one block's median lifecycle is at least 1.5× the
  median of the scenario's other blocks; a slowdown that lasts about one block lands on whichever
  scenario ran then, and few blocks per scenario cannot average it out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..samples import PRIMARY_METRICS, Sample, ScenarioSamples, group_by_scenario
from .compare import mann_whitney
from .stats import MIN_N_FOR_PERCENTILE, as_array, count_outside

CV_LIMIT: dict[str, float] = {"lifecycle_ms": 0.10, "connect_us": 0.50}
STEAL_LIMIT_PCT = 5.0
DRIFT_ALPHA = 0.01
DRIFT_MIN_N = 20  # at least 10 per half
BLOCK_RATIO_LIMIT = 1.5
BLOCK_MIN_N = 3  # samples a block needs for its median to count


def _num(env: Mapping[str, Any], key: str) -> float | None:
    value = env.get(key)
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


Record = dict[str, Any]  # {rule, scenario, text}: see warning_groups


def _rec(rule: str, scenario: str | None, text: str) -> Record:
    return {"rule": rule, "scenario": scenario, "text": text}


def environment_warnings(env: Mapping[str, Any]) -> list[str]:
    return [r["text"] for r in environment_records(env)]


def environment_records(env: Mapping[str, Any]) -> list[Record]:
    out = []
    cpus = _num(env, "cpu_count")
    for key, when in (("loadavg_start", "at the start"), ("loadavg_end", "at the end")):
        load = _num(env, key)
        if load is not None and cpus and load > cpus:
            out.append(
                _rec(
                    "cpu_contention",
                    None,
                    f"CPU contention: load average {load:.2f} {when} of the run exceeds the {cpus:g} CPUs; "
                    "timings include waiting for a CPU (rule: load > CPU count)",
                )
            )
    steal = _num(env, "steal_pct")
    if steal is not None and steal > STEAL_LIMIT_PCT:
        out.append(
            _rec(
                "cpu_contention",
                None,
                f"CPU contention: {steal:.1f}% steal time — the hypervisor took CPU from this VM "
                f"(rule: steal > {STEAL_LIMIT_PCT:g}%)",
            )
        )
    return out


def _in_run_order(samples: Sequence[Sample]) -> list[Sample]:
    # Creation time orders samples across interleaved blocks; iteration is the fallback.
    if all(s.t_create_ns for s in samples):
        return sorted(samples, key=lambda s: s.t_create_ns)
    return sorted(samples, key=lambda s: (s.block, s.iteration))


def scenario_warnings(scenario: str, samples: Sequence[Sample]) -> list[str]:
    return [r["text"] for r in scenario_records(scenario, samples)]


def scenario_records(scenario: str, samples: Sequence[Sample]) -> list[Record]:
    out = []
    failed = [s for s in samples if not s.ok]
    if failed:
        errors = sorted({s.error for s in failed if s.error})
        detail = f" (e.g. {errors[0]!r})" if errors else ""
        out.append(
            _rec(
                "failed",
                scenario,
                f"{scenario}: {len(failed)} of {len(samples)} cold starts failed and are excluded from the statistics"
                + detail,
            )
        )
    ok = [s for s in samples if s.ok]
    ordered = _in_run_order(ok)
    for metric in PRIMARY_METRICS:
        arr = as_array([s.value(metric) for s in ordered])
        if arr.size < 2:
            continue
        mean = float(np.mean(arr))
        sd = float(np.std(arr, ddof=1))
        limit = CV_LIMIT[metric]
        if mean > 0 and sd / mean > limit:
            out.append(
                _rec(
                    "unstable",
                    scenario,
                    f"{scenario} {metric}: stdev is {sd / mean:.0%} of the mean (rule: > {limit:.0%}); "
                    "the run is unstable, compare medians and use more iterations",
                )
            )
        extreme = count_outside(arr, 3.0)
        if extreme:
            out.append(
                _rec(
                    "extreme_outliers",
                    scenario,
                    f"{scenario} {metric}: {extreme} extreme outlier(s) beyond 3×IQR from the quartiles",
                )
            )
        if arr.size >= DRIFT_MIN_N:
            half = arr.size // 2
            first, second = arr[:half], arr[half:]
            _u, p = mann_whitney(first, second)
            if p < DRIFT_ALPHA:
                out.append(
                    _rec(
                        "drift",
                        scenario,
                        f"{scenario} {metric}: drift — median {np.median(first):.4g} in the first half vs "
                        f"{np.median(second):.4g} in the second (Mann–Whitney p={p:.2g} < {DRIFT_ALPHA}); "
                        "something changed during the run",
                    )
                )
    return out


def percentile_warnings(counts: Mapping[str, int]) -> list[str]:
    """One line per percentile rather than per scenario: every CI-sized run trips the p99 rule."""
    out = []
    for stat, need in MIN_N_FOR_PERCENTILE.items():
        short = [f"{name} (n={n})" for name, n in counts.items() if 0 < n < need]
        if short:
            out.append(
                f"too few samples for {stat} (rule: {stat} needs >= {need} successful samples): "
                f"{', '.join(short)}; treat those {stat} values as rough"
            )
    return out


def control_warnings(comparisons: Sequence[Any], alpha: float) -> list[str]:
    """A/A controls (a scenario declared identical to its reference): a significant difference
    between the two is a false positive, so the run's other significant results deserve doubt."""
    out = []
    for c in comparisons:
        p = c.mannwhitney_p_holm
        if isinstance(p, float) and math.isfinite(p) and p < alpha:
            out.append(
                f"false-positive check failed: {c.a} and {c.b} are the same experiment, yet their {c.metric} "
                f"differs (Mann–Whitney p={p:.2g} Holm-corrected < {alpha:g}); drift or contention makes "
                "differences look real in this run"
            )
    return out


def disturbed_block_records(group: ScenarioSamples) -> list[Record]:
    """Blocks whose median lifecycle is far above the median of the scenario's other blocks (only
    slow ones: a disturbance slows cold starts down, and with two blocks the other one is the
    reference)."""
    scenario, blocks = group.scenario, group.values_by_block("lifecycle_ms")
    medians = {b: float(np.median(v)) for b, v in blocks.items() if len(v) >= BLOCK_MIN_N}
    if len(medians) < 2:
        return []
    out = []
    for block, median in sorted(medians.items()):
        others = float(np.median([v for b, vals in blocks.items() if b != block for v in vals]))
        if others <= 0:
            continue
        ratio = median / others
        if ratio >= BLOCK_RATIO_LIMIT:
            out.append(
                _rec(
                    "disturbed_block",
                    scenario,
                    f"{scenario} lifecycle_ms: block {block} has median {median:.4g} ms against {others:.4g} ms in "
                    f"its other blocks ({ratio:.2f}×; rule: >= {BLOCK_RATIO_LIMIT:g}×); something "
                    "disturbed the machine during that block — comparisons involving it are noise-level",
                )
            )
    return out


def noise_warnings(samples: Sequence[Sample], environment: Mapping[str, Any]) -> list[str]:
    return [r["text"] for r in noise_records(samples, environment)]


def noise_records(samples: Sequence[Sample], environment: Mapping[str, Any]) -> list[Record]:
    """Every warning as {rule, scenario, text}, for warning_groups."""
    out = environment_records(environment)
    groups = group_by_scenario(samples)
    counts = {n: sum(s.ok for s in g.samples) for n, g in groups.items()}
    # One record per percentile: each line already names every scenario it concerns.
    out.extend(_rec(f"percentile_n:{w.split()[4]}", None, w) for w in percentile_warnings(counts))
    for scenario, group in groups.items():
        out.extend(scenario_records(scenario, group.samples))
    for group in groups.values():
        out.extend(disturbed_block_records(group))
    return out
