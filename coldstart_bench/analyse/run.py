"""From raw samples to everything a run reports: statistics, comparisons, the delay fit,
expectation verdicts, the gate, noise warnings and findings. The pytest plugin calls
`analyse`, then `write_report` and `terminal_lines`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..catalogue import CONNECT_SPEEDUP, LIFECYCLE_SAVING, PREDICTABILITY, Catalogue, default_catalogue
from ..results import SUMMARY_VERSION, EnvironmentRecord, RunResult
from ..samples import ALL_METRICS, PRIMARY_METRICS, Sample, group_by_scenario
from .adjusted import aligned_rows
from .analysis import RunAnalysis
from .arms import arm_factors, comparison_kind
from .baseline import Baseline
from .compare import Comparison, adjust, compare, delay_fit, paired_blocks
from .expectations import Expectation, evaluate
from .familywise import MIN_DELAY_LEVELS, shift_interval
from .findings import build_findings
from .gate import GateRule, evaluate_gate
from .harness_time import arm_phases, connect_breakdown, harness_time
from .noise import noise_records
from .report_sections import lower_variance, sample_size_plans
from .round_trips import round_trip_rows
from .stats import describe, json_safe, values_by_scenario
from .tls_connect import tls_connect_table
from .warning_groups import group_warnings
from .wire_tables import language_rows, pg_proxy_rows

__all__ = ["AnalysisConfig", "RunAnalysis", "RunReport", "analyse", "report_run", "terminal_lines", "write_report"]


@dataclass
class AnalysisConfig:
    alpha: float = 0.05
    expectations: list[Expectation] = field(default_factory=list)
    expectation_policy: str = "report"  # "report" | "fail" | "strict" (see expectations.verdicts_fail)
    gate_rules: list[GateRule] = field(default_factory=list)
    baseline: Baseline | None = None
    max_regression: float = 0.10
    bootstrap_resamples: int = 2000
    seed: int = 12345
    catalogue: Catalogue = field(default_factory=default_catalogue)
    plan: dict[str, Any] | None = None  # the campaign plan, recorded in summary.json
    deselected: set[str] = field(default_factory=set)  # scenarios -k/-m left out (gate notes say so)
    unsupported: list[dict[str, str]] = field(default_factory=list)  # [{scenario, reason}]: never measured
    stopping: dict[str, Any] | None = None  # the stopping rule's record (stopping.PrecisionStopPolicy.record)


def _scenario_delay(samples: Sequence[Sample]) -> float:
    delays = [s.delay_ms for s in samples if math.isfinite(s.delay_ms)]
    return float(Counter(delays).most_common(1)[0][0]) if delays else 0.0


def _mean(arr: np.ndarray) -> float:
    return float(np.mean(arr)) if arr.size else math.nan


def phase_attribution(values: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Mean time per lifecycle phase (ms) and the share of the lifecycle spent getting a connection.

    start→die is split into start→ready (runtime start-up), connection, request and the rest
    (exit and anything unmeasured), so the stacked phases add up to the mean lifecycle."""
    get = values.get
    empty = np.array([])
    create = _mean(get("create_to_start_ms", empty))
    ready = _mean(get("start_to_ready_ms", empty))
    run = _mean(get("start_to_die_ms", empty))
    destroy = _mean(get("die_to_destroy_ms", empty))
    connect = _mean(get("connect_us", empty)) / 1000.0
    request = _mean(get("request_rtt_us", empty)) / 1000.0
    lifecycle = _mean(get("lifecycle_ms", empty))
    known = sum(x for x in (ready, connect, request) if math.isfinite(x))
    rest = max(0.0, run - known) if math.isfinite(run) else math.nan
    share = connect / lifecycle if math.isfinite(connect) and lifecycle and math.isfinite(lifecycle) else math.nan
    return {
        "create_to_start_ms": create,
        "start_to_ready_ms": ready,
        "connect_ms": connect,
        "request_ms": request,
        "rest_of_run_ms": rest,
        "die_to_destroy_ms": destroy,
        "lifecycle_ms": lifecycle,
        "connect_share": share,
        "resolve_ms": _mean(get("resolve_us", empty)) / 1000.0,
        "handshake_ms": _mean(get("handshake_us", empty)) / 1000.0,
        "fd_recv_ms": _mean(get("fd_recv_us", empty)) / 1000.0,
    }


def scenario_summary(
    group: Sequence[Sample], values: Mapping[str, np.ndarray], *, resamples: int, seed: int
) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for metric in ALL_METRICS:
        arr = values[metric]
        if metric in PRIMARY_METRICS or arr.size:
            entry[metric] = describe(arr, resamples=resamples, seed=seed)
    ok = [s for s in group if s.ok]
    entry.update(
        n=len(group),
        ok=len(ok),
        failed=len(group) - len(ok),
        delay_ms=_scenario_delay(group),
        mode=Counter(s.mode for s in group).most_common(1)[0][0],
        network=Counter(s.network for s in group).most_common(1)[0][0],
        burst=max(s.burst for s in group),
        paths=dict(Counter(s.path or s.mode for s in group)),
        interfaces=dict(Counter(s.interfaces for s in group if s.interfaces)),
        blocks=len({s.block for s in group}),
        phases=phase_attribution(values),
    )
    return entry


def _comparisons(
    values: Mapping[str, Mapping[str, np.ndarray]], catalogue: Catalogue, resamples: int, seed: int
) -> tuple[list[Comparison], dict[int, str]]:
    """Every declared (scenario, reference) pair that ran, per primary metric; and the role
    (headline, control) of each comparison by its index."""
    present = list(values)
    out: list[Comparison] = []
    roles: dict[int, str] = {}
    for scenario in present:
        for ref in catalogue.references_of(scenario, present):
            for metric in PRIMARY_METRICS:
                a, b = values[scenario][metric], values[ref.scenario][metric]
                if a.size and b.size:
                    if ref.role:
                        roles[len(out)] = ref.role
                    out.append(
                        compare(
                            scenario, a, ref.scenario, b, metric, resamples=resamples, seed=seed, emphasis=ref.headline
                        )
                    )
    adjust(out)
    return out, roles


def _paired_blocks(
    groups: Mapping[str, Sequence[Sample]], catalogue: Catalogue, resamples: int, seed: int
) -> list[dict[str, Any]]:
    """Per-block paired differences for every compared pair that ran interleaved (several blocks)."""

    def by_block(samples: Sequence[Sample], metric: str) -> dict[int, list[float]]:
        out: dict[int, list[float]] = {}
        for s in samples:
            if s.ok:
                out.setdefault(s.block, []).append(s.value(metric))
        return out

    present = list(groups)
    out = []
    for scenario in present:
        for reference in catalogue.references_of(scenario, present):
            ref = reference.scenario
            for metric in PRIMARY_METRICS:
                a, b = by_block(groups[scenario], metric), by_block(groups[ref], metric)
                if len(a) > 1 and len(b) > 1:
                    res = paired_blocks(scenario, a, ref, b, metric)
                    if res is not None:
                        out.append(res)
    return out


def _too_few_levels(levels: Sequence[float]) -> str:
    shown = ", ".join(f"{x:g} ms" for x in levels)
    return (
        f"a delay slope needs at least {MIN_DELAY_LEVELS} delay levels with data, this run has {len(levels)} "
        f"({shown}); a line through two points fits exactly and says nothing about linearity"
    )


def blocks_by_scenario(groups: Mapping[str, Sequence[Sample]]) -> dict[str, dict[str, dict[int, list[float]]]]:
    """{scenario: {metric: {block: values}}} of the successful cold starts, for paired comparisons."""
    out: dict[str, dict[str, dict[int, list[float]]]] = {}
    for name, samples in groups.items():
        per_metric = out.setdefault(name, {})
        for s in samples:
            if not s.ok:
                continue
            for metric in ALL_METRICS:
                v = s.value(metric)
                if v == v:
                    per_metric.setdefault(metric, {}).setdefault(s.block, []).append(v)
    return out


def _adjusted_shifts(
    comparisons: Sequence[Comparison], values: Mapping[str, Mapping[str, np.ndarray]], alpha: float
) -> list[dict[str, Any]]:
    """Per comparison: the Hodges–Lehmann shift a − b with its Mann–Whitney interval at the Bonferroni
    level over all comparisons of the table (the bootstrap intervals beside it are 95 % each)."""
    k = max(1, sum(1 for c in comparisons if math.isfinite(c.mannwhitney_p)))
    level = 1.0 - alpha / k
    out = []
    for c in comparisons:
        estimate, ci = shift_interval(values[c.a][c.metric], values[c.b][c.metric], level)
        out.append(
            {
                "shift": estimate,
                "shift_ci_adjusted": list(ci) if ci else None,
                "confidence_adjusted": level,
                "significant": bool(ci is not None and (ci[0] > 0 or ci[1] < 0)),
            }
        )
    return out


def _delay_fits(
    values: Mapping[str, Mapping[str, np.ndarray]], delays: Mapping[str, float], catalogue: Catalogue
) -> dict[str, Any]:
    """The thesis's Table 2 as a fit, per declared delay series (members: the scenarios naming it)."""
    fits: dict[str, Any] = {}
    primary = ""
    for declared_series in catalogue.delay_series:
        family = declared_series.name
        members = [s for s in values if (sc := catalogue.get(s)) is not None and sc.delay_series == family]
        ref_name = declared_series.reference
        per_metric: dict[str, Any] = {}
        for metric in PRIMARY_METRICS:
            series = {s: (delays[s], values[s][metric]) for s in members}
            ref = (ref_name, values[ref_name][metric]) if ref_name in values else None
            fit = delay_fit(series, metric, reference=ref)
            if fit is not None:
                entry = fit.to_dict()
                levels = sorted({d for d, v in series.values() if v.size})
                if len(levels) < MIN_DELAY_LEVELS:  # a line through two points fits exactly
                    entry.update(slope=None, slope_ci=None, refused=_too_few_levels(levels))
                per_metric[metric] = entry
        if per_metric:
            per_metric["family"] = family
            fits[family] = per_metric
            if declared_series.primary and not primary:
                primary = family
    # The thesis's fit (the primary series) is exposed at the top level too.
    if primary:
        fits.update({k: v for k, v in fits[primary].items() if k in PRIMARY_METRICS})
        fits["primary"] = primary
    return fits


def _with_finding_verdicts(row: dict[str, Any], findings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A comparison whose pair and metric a finding judges shows the finding's verdict, not one of its
    own (one verdict per claim): its location verdict (`significant`) and its variance claim (the
    Brown–Forsythe p Holm-adjusted over the findings' family; the mean-centred Levene p stays as a
    description, without a verdict of its own). The findings it defers to are listed in `judged_by`."""
    pair = {row["a"], row["b"]}
    judged_by = []
    for f in findings:
        if set(f.get("scenarios") or []) != pair or f.get("metric") != row["metric"] or f.get("p_adjusted") is None:
            continue
        judged_by.append(
            {k: f.get(k) for k in ("kind", "comparison", "estimator", "estimate", "ci_adjusted", "significant")}
            | {"p_adjusted": f.get("p_adjusted"), "family_size": f.get("family_size")}
        )
        if f.get("kind") == PREDICTABILITY:
            row["levene_median_p"] = f.get("p_value")
            row["levene_median_p_holm"] = f.get("p_adjusted")
            row["levene_mean_p_holm"] = None
        elif f.get("kind") in (LIFECYCLE_SAVING, CONNECT_SPEEDUP, "control"):
            row["significant"] = bool(f.get("significant"))
            row["mannwhitney_p_holm"] = None
    if judged_by:
        row["judged_by"] = judged_by
    return row


def _factors(catalogue: Catalogue, a: str, b: str) -> dict[str, Any]:
    """What the arms differ in besides the connection method, and so what kind of comparison it is."""
    factors = arm_factors(catalogue, a, b)
    return {"differs_in": list(factors), "comparison_kind": comparison_kind(catalogue, a, b, factors)}


def analyse(
    samples: Sequence[Sample], environment: Mapping[str, Any] | EnvironmentRecord, config: AnalysisConfig
) -> RunAnalysis:
    """Everything the run reports, computed once; deterministic for a given config.seed."""
    env = environment.to_dict() if isinstance(environment, EnvironmentRecord) else dict(environment)
    catalogue = config.catalogue
    groups = group_by_scenario(samples)
    values = values_by_scenario(samples)
    resamples, seed = config.bootstrap_resamples, config.seed
    scenarios = {
        name: scenario_summary(group.samples, values[name], resamples=resamples, seed=seed)
        | {"declared": catalogue.declared(name) or {}}
        for name, group in groups.items()
    }
    delays = {name: float(entry["delay_ms"]) for name, entry in scenarios.items()}
    comparisons, roles = _comparisons(values, catalogue, resamples, seed)
    fits = _delay_fits(values, delays, catalogue)
    sample_groups = {k: g.samples for k, g in groups.items()}
    blocks = _paired_blocks(sample_groups, catalogue, resamples, seed)
    by_block = blocks_by_scenario(sample_groups)
    gate_results = evaluate_gate(
        config.gate_rules,
        values,
        config.baseline,
        max_regression=config.max_regression,
        alpha=config.alpha,
        deselected=config.deselected,
    )
    judged = build_findings(
        values,
        scenarios,
        delays,
        env,
        catalogue,
        alpha=config.alpha,
        blocks=by_block,
        stopping=config.stopping,
        rows=aligned_rows(samples),
    )
    # An expectation stating a finding's claim takes the finding's verdict (one verdict per claim).
    verdicts = evaluate(
        config.expectations, values, alpha=config.alpha, resamples=resamples, seed=seed, findings=judged.findings
    )
    # The A/A control is judged with the findings (at the family-wise level), not per comparison.
    records = noise_records(samples, env) + judged.warnings
    warnings = [r["text"] for r in records]
    shifts = _adjusted_shifts(comparisons, values, config.alpha)
    comparison_dicts = [
        _with_finding_verdicts(
            c.to_dict() | shifts[i] | _factors(catalogue, c.a, c.b) | ({"role": roles[i]} if i in roles else {}),
            judged.findings,
        )
        for i, c in enumerate(comparisons)
    ]
    summary: dict[str, Any] = {
        "version": SUMMARY_VERSION,
        "scenarios": scenarios,
        "environment": env,
        "analysis": {
            "alpha": config.alpha,
            "bootstrap_resamples": resamples,
            "seed": seed,
            "confidence": 0.95,
            "expectation_policy": config.expectation_policy,
            "max_regression": config.max_regression,
            "baseline": str(config.baseline.path) if config.baseline else None,
        },
        "comparisons": comparison_dicts,
        "delay_fit": fits,
        "paired_blocks": blocks,
        "verdicts": [v.to_dict() for v in verdicts],
        "gate": [g.to_dict() for g in gate_results],
        "warnings": list(warnings),
        "warning_groups": [g.to_dict() | {"line": g.line()} for g in group_warnings(records)],
        "findings": judged.findings,
        "family": judged.family,
        "effects": lower_variance(catalogue, values, judged.results, alpha=config.alpha),
        "planning": sample_size_plans(
            catalogue, values, by_block, judged.family, alpha=config.alpha, results=judged.results
        ),
    }
    if config.plan is not None:
        summary["plan"] = config.plan
    if config.unsupported:
        summary["unsupported"] = list(config.unsupported)
    summary["languages"] = language_rows(scenarios)
    summary["pg_proxy"] = pg_proxy_rows(scenarios, env)
    breakdown = connect_breakdown(samples)
    if breakdown:
        summary["connect_breakdown"] = breakdown
    phased = arm_phases(samples)
    if phased:
        summary["arm_phases"] = phased
    spent = harness_time(samples, env, config.plan, alpha=config.alpha)
    if spent:
        summary["harness_time"] = spent
    tls = tls_connect_table(samples, catalogue)
    if tls is not None:
        summary["tls"] = tls
    distance = round_trip_rows(samples, catalogue)
    if distance:
        summary["round_trips"] = distance
    if config.stopping is not None:
        summary["stopping"] = config.stopping
    return RunAnalysis(
        result=RunResult.from_dict(json_safe(summary)),
        gate_results=gate_results,
        verdicts=verdicts,
        warnings=warnings,
        comparisons=comparisons,
        expectation_policy=config.expectation_policy,
    )


def write_report(run_dir: Path, samples: Sequence[Sample], analysis: RunAnalysis) -> list[Path]:
    """summary.json, the PNG plots, report.md and report.html into run_dir; returns what was written.

    Raises report.files.ReportWriteError naming the path that failed; files written before it stay."""
    from .report import write_all

    return write_all(Path(run_dir), samples, analysis.summary)


@dataclass
class RunReport:
    analysis: RunAnalysis
    written: list[Path] = field(default_factory=list)
    write_error: OSError | None = None  # the report could not be (fully) written; samples.csv is untouched


def report_run(
    run_dir: Path | None,
    samples: Sequence[Sample],
    environment: Mapping[str, Any] | EnvironmentRecord,
    config: AnalysisConfig,
) -> RunReport:
    """The end of a run, and `coldstart-bench report RUN_DIR`: analyse the samples and write the
    report files into run_dir (none when it is None). The same inputs give the same files."""
    analysis = analyse(samples, environment, config)
    report = RunReport(analysis)
    if run_dir is not None:
        try:
            report.written = write_report(run_dir, samples, analysis)
        except OSError as exc:
            report.write_error = exc
    return report


def terminal_lines(analysis: RunAnalysis, *, verbose: bool = False, report_path: str = "") -> list[str]:
    from .report.terminal import render

    return render(analysis, verbose=verbose, report_path=report_path)
