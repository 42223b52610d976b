"""From raw samples to everything a run reports: statistics, comparisons, the delay fit,
expectation verdicts, the gate, noise warnings and findings. The pytest plugin calls
`analyse`, then `write_report` and `terminal_lines`."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..samples import ALL_METRICS, PRIMARY_METRICS, Sample, group_by_scenario
from .baseline import Baseline
from .compare import Comparison, adjust, compare, delay_fit, paired_blocks, reference_for, two_sample_estimate
from .expectations import Expectation, Verdict, evaluate, verdicts_fail
from .gate import GateResult, GateRule, evaluate_gate
from .noise import noise_warnings
from .stats import describe, json_safe, values_by_scenario

SUMMARY_VERSION = 1
_DIRECT_FAMILIES: dict[str, re.Pattern[str]] = {
    "direct": re.compile(r"^direct(-\d+(?:\.\d+)?ms)?$"),
    "pg-direct": re.compile(r"^pg-direct(-\d+(?:\.\d+)?ms)?$"),
}
_REFERENCE_OF_FAMILY = {"direct": "socket", "pg-direct": "pg-socket"}
_BURST = re.compile(r"^burst-(\d+)-(.+)$")


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


@dataclass
class RunAnalysis:
    summary: dict[str, Any]
    gate_results: list[GateResult]
    verdicts: list[Verdict]
    warnings: list[str]
    comparisons: list[Comparison] = field(default_factory=list)
    expectation_policy: str = "report"

    @property
    def gate_failed(self) -> bool:
        return any(not g.passed for g in self.gate_results)

    @property
    def expectations_failed(self) -> bool:
        return verdicts_fail(self.verdicts, self.expectation_policy)

    @property
    def failed(self) -> bool:
        return self.gate_failed or self.expectations_failed


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


def _comparisons(values: Mapping[str, Mapping[str, np.ndarray]], resamples: int, seed: int) -> list[Comparison]:
    present = list(values)
    out = []
    for scenario in present:
        for ref, emphasis in reference_for(scenario, present):
            for metric in PRIMARY_METRICS:
                a, b = values[scenario][metric], values[ref][metric]
                if a.size and b.size:
                    out.append(compare(scenario, a, ref, b, metric, resamples=resamples, seed=seed, emphasis=emphasis))
    adjust(out)
    return out


def _paired_blocks(groups: Mapping[str, Sequence[Sample]], resamples: int, seed: int) -> list[dict[str, Any]]:
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
        for ref, _emphasis in reference_for(scenario, present):
            for metric in PRIMARY_METRICS:
                a, b = by_block(groups[scenario], metric), by_block(groups[ref], metric)
                if len(a) > 1 and len(b) > 1:
                    res = paired_blocks(scenario, a, ref, b, metric, resamples=resamples, seed=seed)
                    if res is not None:
                        out.append(res)
    return out


def _delay_fits(values: Mapping[str, Mapping[str, np.ndarray]], delays: Mapping[str, float]) -> dict[str, Any]:
    """The thesis's Table 2 as a fit, per family of direct scenarios (echo: direct*, pg: pg-direct*)."""
    fits: dict[str, Any] = {}
    for family, pattern in _DIRECT_FAMILIES.items():
        members = [s for s in values if pattern.match(s)]
        ref_name = _REFERENCE_OF_FAMILY[family]
        per_metric: dict[str, Any] = {}
        for metric in PRIMARY_METRICS:
            series = {s: (delays[s], values[s][metric]) for s in members}
            ref = (ref_name, values[ref_name][metric]) if ref_name in values else None
            fit = delay_fit(series, metric, reference=ref)
            if fit is not None:
                per_metric[metric] = fit.to_dict()
        if per_metric:
            per_metric["family"] = family
            fits[family] = per_metric
    # The thesis's fit is the echo family; expose it at the top level too.
    if "direct" in fits:
        fits.update({k: v for k, v in fits["direct"].items() if k in PRIMARY_METRICS})
    return fits


def _ci_text(ci: Sequence[float] | None, unit: str, digits: int = 1) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "CI n/a"
    return f"95% CI {ci[0]:.{digits}f} to {ci[1]:.{digits}f}{unit}"


def _saving(
    values: Mapping[str, Mapping[str, np.ndarray]],
    slow: str,
    fast: str,
    metric: str,
    resamples: int,
    seed: int,
) -> tuple[float, tuple[float, float] | None]:
    """median(slow) − median(fast): what `fast` saves, with a bootstrap CI."""
    return two_sample_estimate(
        values[slow][metric], values[fast][metric], "median", "diff", resamples=resamples, seed=seed
    )


def build_findings(
    values: Mapping[str, Mapping[str, np.ndarray]],
    summary_scenarios: Mapping[str, Any],
    fits: Mapping[str, Any],
    environment: Mapping[str, Any],
    *,
    resamples: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Plain sentences with their confidence intervals; each names the scenarios it rests on."""
    findings: list[dict[str, Any]] = []
    command = environment.get("command")

    def add(topic: str, text: str, estimate: float, ci: tuple[float, float] | None, unit: str, based_on: list[str]):
        findings.append(
            {"topic": topic, "text": text, "estimate": estimate, "ci": ci, "unit": unit, "scenarios": based_on}
            | ({"command": command} if command else {})
        )

    def have(*names: str) -> bool:
        return all(n in values and values[n]["lifecycle_ms"].size >= 2 for n in names)

    def lifecycle_saving(topic: str, slow: str, fast: str, subject: str) -> None:
        """What `fast` saves against `slow` (median difference); a negative saving is reported as a cost."""
        d, ci = _saving(values, slow, fast, "lifecycle_ms", resamples, seed)
        base = float(np.median(values[slow]["lifecycle_ms"]))
        verb = f"saves {d:.1f} ms" if d >= 0 else f"costs {-d:.1f} ms more"
        unclear = not ci or ci[0] <= 0 <= ci[1]
        tail = " — not distinguishable from zero at this sample size" if unclear else ""
        add(
            topic,
            f"{subject} {verb} per cold start ({abs(d) / base:.1%} of {slow}'s median lifecycle {base:.1f} ms; "
            f"median {slow} − median {fast} = {d:.1f} ms, {_ci_text(ci, ' ms')}){tail}.",
            d,
            ci,
            "ms",
            [slow, fast],
        )

    def connect_speedup(topic: str, slow: str, fast: str) -> None:
        a, b = values[fast]["connect_us"], values[slow]["connect_us"]
        if a.size < 2 or b.size < 2:
            return
        ratio, ci = two_sample_estimate(b, a, "median", "ratio", resamples=resamples, seed=seed)
        add(
            topic,
            f"Getting a usable connection is {ratio:.1f}× faster with {fast} than {slow} "
            f"(median connect {np.median(a):.0f} µs vs {np.median(b):.0f} µs, ratio {_ci_text(ci, '×')}).",
            ratio,
            ci,
            "x",
            [slow, fast],
        )

    if have("direct", "socket"):
        connect_speedup("connection", "direct", "socket")
        lifecycle_saving("injection", "direct", "socket", "Injection")
        v_d = summary_scenarios["direct"]["lifecycle_ms"]
        v_s = summary_scenarios["socket"]["lifecycle_ms"]
        add(
            "predictability",
            f"Lifecycle variance is {v_s['variance']:.2f} ms² with injection vs {v_d['variance']:.2f} ms² direct; "
            f"p99 {v_s['p99']:.1f} vs {v_d['p99']:.1f} ms (see the Levene / Brown–Forsythe comparisons).",
            (v_s["variance"] or math.nan) / (v_d["variance"] or math.nan) if v_d["variance"] else math.nan,
            None,
            "ratio",
            ["direct", "socket"],
        )
    fit = fits.get("lifecycle_ms")
    if fit and fit.get("slope") is not None:
        add(
            "delay",
            f"Each millisecond of handshake delay adds {fit['slope']:.2f} ms to a direct cold start "
            f"({_ci_text(fit['slope_ci'], ' ms/ms', 2)}; a slope of 1 means the delay reaches the lifecycle "
            f"undiminished), fitted over {', '.join(fit['scenarios'])}.",
            fit["slope"],
            fit["slope_ci"],
            "ms/ms",
            list(fit["scenarios"]),
        )
    if have("direct-100ms", "socket-100ms"):
        connect_speedup("delay", "direct-100ms", "socket-100ms")
        lifecycle_saving("delay", "direct-100ms", "socket-100ms", "With 100 ms of SYN-ACK delay, injection")
    if have("direct", "socket-nonet"):
        lifecycle_saving(
            "no-network", "direct", "socket-nonet", "Injection into a function without container networking"
        )
    if have("socket", "socket-nonet"):
        lifecycle_saving("no-network", "socket", "socket-nonet", "Dropping container networking on top of injection")
    if have("fallback", "direct"):
        lifecycle_saving("fallback", "direct", "fallback", "Falling back to direct because the pool is down")
    if have("socket", "socket-return"):
        lifecycle_saving("release", "socket", "socket-return", "Handing the connection back to the pool")
    if have("pg-direct", "pg-socket"):
        connect_speedup("pg", "pg-direct", "pg-socket")
        lifecycle_saving("pg", "pg-direct", "pg-socket", "On PostgreSQL, injecting an authenticated session")
    if have("pg-direct", "pg-socket-nonet"):
        lifecycle_saving("pg", "pg-direct", "pg-socket-nonet", "On PostgreSQL without container networking, injection")
    for n, modes in sorted(burst_groups(values).items()):
        if "direct" in modes and "socket-nonet" in modes and have(modes["direct"], modes["socket-nonet"]):
            lifecycle_saving(
                "burst",
                modes["direct"],
                modes["socket-nonet"],
                (f"With {n} cold starts at once" if n > 1 else "Started one at a time")
                + ", injection without networking",
            )
    bursts_direct = {n: m["direct"] for n, m in burst_groups(values).items() if "direct" in m and have(m["direct"])}
    if 1 in bursts_direct and len(bursts_direct) > 1:
        top = max(bursts_direct)
        one = float(np.median(values[bursts_direct[1]]["lifecycle_ms"]))
        many = float(np.median(values[bursts_direct[top]]["lifecycle_ms"]))
        ratio, ci = two_sample_estimate(
            values[bursts_direct[top]]["lifecycle_ms"],
            values[bursts_direct[1]]["lifecycle_ms"],
            "median",
            "ratio",
            resamples=resamples,
            seed=seed,
        )
        add(
            "burst",
            f"Started {top} at once, a direct cold start takes {many:.1f} ms (median) against {one:.1f} ms alone: "
            f"{ratio:.2f}× ({_ci_text(ci, '×', 2)}); a ratio well above 1 is the serialised start-up of thesis Fig. 2.",
            ratio,
            ci,
            "x",
            [bursts_direct[1], bursts_direct[top]],
        )
    return json_safe(findings)  # type: ignore[no-any-return]


def burst_groups(values: Mapping[str, Any]) -> dict[int, dict[str, str]]:
    """{N: {mode label: scenario id}} for burst-<N>-<mode> scenarios."""
    out: dict[int, dict[str, str]] = {}
    for name in values:
        m = _BURST.match(name)
        if m:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = name
    return out


def analyse(samples: Sequence[Sample], environment: Mapping[str, Any], config: AnalysisConfig) -> RunAnalysis:
    """Everything the run reports, computed once; deterministic for a given config.seed."""
    groups = group_by_scenario(samples)
    values = values_by_scenario(samples)
    resamples, seed = config.bootstrap_resamples, config.seed
    scenarios = {
        name: scenario_summary(group.samples, values[name], resamples=resamples, seed=seed)
        for name, group in groups.items()
    }
    delays = {name: float(entry["delay_ms"]) for name, entry in scenarios.items()}
    comparisons = _comparisons(values, resamples, seed)
    fits = _delay_fits(values, delays)
    blocks = _paired_blocks({k: g.samples for k, g in groups.items()}, resamples, seed)
    verdicts = evaluate(config.expectations, values, alpha=config.alpha, resamples=resamples, seed=seed)
    gate_results = evaluate_gate(
        config.gate_rules, values, config.baseline, max_regression=config.max_regression, alpha=config.alpha
    )
    warnings = noise_warnings(samples, environment)
    findings = build_findings(values, scenarios, fits, environment, resamples=resamples, seed=seed)
    summary: dict[str, Any] = {
        "version": SUMMARY_VERSION,
        "scenarios": scenarios,
        "environment": dict(environment),
        "analysis": {
            "alpha": config.alpha,
            "bootstrap_resamples": resamples,
            "seed": seed,
            "confidence": 0.95,
            "expectation_policy": config.expectation_policy,
            "max_regression": config.max_regression,
            "baseline": str(config.baseline.path) if config.baseline else None,
        },
        "comparisons": [c.to_dict() for c in comparisons],
        "delay_fit": fits,
        "paired_blocks": blocks,
        "verdicts": [v.to_dict() for v in verdicts],
        "gate": [g.to_dict() for g in gate_results],
        "warnings": list(warnings),
        "findings": findings,
    }
    return RunAnalysis(
        summary=json_safe(summary),
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


def terminal_lines(analysis: RunAnalysis) -> list[str]:
    from .report.terminal import render

    return render(analysis)
