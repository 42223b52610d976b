"""Findings: plain sentences, each judged at the run's family-wise level and naming the scenarios it
rests on.

Which pairs produce which sentence is declared in the catalogue (a Reference's `findings`, and its
`control` flag for the A/A check); this module only knows how each kind of finding is computed and
worded. Every finding of a run belongs to one family of k tests (`familywise`): location findings get
a Hodges–Lehmann estimate with a test-inverted interval at the Bonferroni level 1 − alpha/k (lifecycle
findings: the arm's effect adjusted for what the connection method cannot change, adjusted.py), ratios
the same on the log scale, the variance finding a Brown–Forsythe test (Levene's, median-centred: robust
to the skew of latencies) and the delay slope its regression test;
p-values are Holm-adjusted over all k. A finding is `significant` only when its family-wise interval
excludes the null (0, or a ratio of 1) — or, without an interval, when its Holm-adjusted p is below
alpha — and only a significant finding states a saving.

After a run stopped by the stopping rule, the headline lifecycle findings use the confidence sequence
(the interval that stays valid under optional stopping) at the same share alpha/k of the family.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..catalogue import CONNECT_SPEEDUP, LIFECYCLE_SAVING, PREDICTABILITY, Catalogue
from .adjusted import (
    AdjustmentRefused,
    Rows,
    adjusted_data,
    ancova,
    choose_covariates,
    in_function_ms,
    welch_interval,
)
from .arms import METHOD, arm_factors, comparison_kind, factor_subject
from .arms import label as kind_label
from .compare import DelayFit, holm, levene
from .familywise import FamilyComparison, FamilyResult, FitRefused, checked_delay_fit, family_findings, saving_text
from .phase_effects import LIFECYCLE, RUN_PHASE, BlocksByScenario, comparison_name, effect_comparisons
from .stats import json_safe

CONTROL_TOPIC = "control"
VARIANCE_ESTIMATOR = "ratio of lifecycle variances (Brown–Forsythe test)"
# The thesis's result: injection cut the cold start's lifecycle by 4.4 % (of direct's median).
THESIS_LIFECYCLE_SHARE = 0.044
RUN_PHASE_TOPIC_SUFFIX = "-start-to-die"
LOG_UNIT = "log"


@dataclass
class _Pending:
    """A finding before the family is judged: what it compares and how to word the result."""

    kind: str
    topic: str
    slow: str
    fast: str
    subject: str = ""
    comparison: FamilyComparison | None = None  # location / log-ratio findings
    p_value: float = math.nan  # tests without an interval (variance, slope)
    role: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    differs_in: tuple[str, ...] = ()
    comparison_kind: str = METHOD


@dataclass
class FindingsResult:
    findings: list[dict[str, Any]]
    family: dict[str, Any]
    results: dict[str, FamilyResult]  # by comparison name
    warnings: list[dict[str, str]]  # {rule, scenario, text}
    delay_fit: DelayFit | FitRefused | None = None


def _as_list(x: Any) -> list[float] | None:
    return list(x) if x else None


def _ratio_name(slow: str, fast: str, metric: str) -> str:
    return f"{slow} / {fast} {metric}"


def _log(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr) & (arr > 0)]
    return np.log(arr)


def _level(result: FamilyResult) -> str:
    return f"{result.confidence_adjusted:.2%}".replace(".00%", "%")


def _holm_text(p_adjusted: float, k: int) -> str:
    return "not tested" if not math.isfinite(p_adjusted) else f"Holm-adjusted p = {p_adjusted:.2g} over {k} findings"


def _ratio_text(result: FamilyResult, slow: str, fast: str, what: str, digits: int = 2) -> tuple[float, Any, str]:
    """exp of a log-scale shift: the ratio slow/fast and its family-wise interval, and a sentence part."""
    ratio = math.exp(result.estimate) if math.isfinite(result.estimate) else math.nan
    ci = tuple(math.exp(x) for x in result.ci_adjusted) if result.ci_adjusted else None
    ci_text = (
        f"family-wise {_level(result)} CI {ci[0]:.{digits}f}× to {ci[1]:.{digits}f}×"
        if ci
        else f"no family-wise {_level(result)} interval at this sample size"
    )
    return ratio, ci, f"{what} {slow}/{fast}: {ci_text}; {_holm_text(result.p_adjusted, result.family_size)}"


class _Builder:
    def __init__(
        self,
        values: Mapping[str, Mapping[str, np.ndarray]],
        blocks: BlocksByScenario | None,
        summary_scenarios: Mapping[str, Any],
        catalogue: Catalogue,
        rows: Rows | None,
        alpha: float,
    ) -> None:
        self.values = values
        self.blocks = blocks
        self.scenarios = summary_scenarios
        self.catalogue = catalogue
        self.rows = rows
        self.alpha = alpha
        self.pending: list[_Pending] = []

    def have(self, *names: str) -> bool:
        return all(n in self.values and self.values[n]["lifecycle_ms"].size >= 2 for n in names)

    def _add(self, pending: _Pending) -> None:
        pending.differs_in = arm_factors(self.catalogue, pending.slow, pending.fast)
        pending.comparison_kind = comparison_kind(self.catalogue, pending.slow, pending.fast, pending.differs_in)
        self.pending.append(pending)

    def adjusted(self, slow: str, fast: str, factors: tuple[str, ...]) -> FamilyComparison | str:
        """The lifecycle comparison adjusted for what the connection method cannot change (adjusted.py),
        or why it cannot be made (the unadjusted comparison is used then)."""
        if self.rows is None or slow not in self.rows or fast not in self.rows:
            return "no per-cold-start rows"
        a, b = self.rows[slow], self.rows[fast]
        choice = choose_covariates(a, b, may_differ=bool(factors), alpha=self.alpha)
        if not choice.used:
            return "no covariate to adjust for" + (f" ({choice.note()})" if choice.left_out else "")
        data = adjusted_data(a, b, choice.used, LIFECYCLE)
        try:
            ancova(data)
        except AdjustmentRefused as exc:
            return str(exc)
        notes = (choice.note(),) if choice.left_out else ()
        return FamilyComparison(comparison_name(slow, fast, LIFECYCLE), adjusted=data, unit="ms", notes=notes)

    def location(self, kind: str, topic: str, slow: str, fast: str, subject: str, metric: str, role: str = "") -> None:
        fallback = ""
        if metric == LIFECYCLE:
            made = self.adjusted(slow, fast, arm_factors(self.catalogue, slow, fast))
            if isinstance(made, FamilyComparison):
                self._add(_Pending(kind, topic, slow, fast, subject, comparison=made, role=role))
                return
            fallback = f"lifecycle not adjusted for the engine phases: {made}"
        found = effect_comparisons(slow, fast, self.values, self.blocks, metrics=(metric,))
        if found:
            comp = found[0]
            if fallback:
                comp = dataclasses.replace(comp, notes=(*comp.notes, fallback))
            self._add(_Pending(kind, topic, slow, fast, subject, comparison=comp, role=role))

    def ratio(self, kind: str, topic: str, slow: str, fast: str, metric: str, subject: str = "") -> None:
        a, b = _log(self.values[slow][metric]), _log(self.values[fast][metric])
        if a.size >= 2 and b.size >= 2:
            comp = FamilyComparison(_ratio_name(slow, fast, metric), a=a, b=b, unit=LOG_UNIT)
            self._add(_Pending(kind, topic, slow, fast, subject, comparison=comp))

    def variance(self, topic: str, slow: str, fast: str, subject: str) -> None:
        _stat, p = levene(self.values[fast]["lifecycle_ms"], self.values[slow]["lifecycle_ms"], "median")
        self._add(_Pending(PREDICTABILITY, topic, slow, fast, subject, p_value=p))


def _primary_series(
    catalogue: Catalogue, values: Mapping[str, Mapping[str, np.ndarray]], delays: Mapping[str, float]
) -> tuple[dict[str, tuple[float, np.ndarray]], tuple[str, np.ndarray] | None] | None:
    for declared in catalogue.delay_series:
        if not declared.primary:
            continue
        members = [s for s in values if (sc := catalogue.get(s)) is not None and sc.delay_series == declared.name]
        members.sort(key=lambda s: delays[s])
        series = {s: (delays[s], values[s]["lifecycle_ms"]) for s in members}
        if not series:
            return None
        ref = (declared.reference, values[declared.reference]["lifecycle_ms"]) if declared.reference in values else None
        return series, ref
    return None


def _rules_out(result: FamilyResult) -> tuple[float | None, str]:
    """What a not-significant lifecycle finding rules out: effects beyond the family-wise interval's
    farther end, i.e. equivalence within ±X ms at the family's level."""
    ci = result.ci_adjusted
    if result.significant or ci is None:
        return None, ""
    bound = max(abs(ci[0]), abs(ci[1]))
    return bound, (
        f" The data rule out an effect larger than ±{bound:.1f} ms: the family-wise interval lies within "
        f"±{bound:.1f} ms (equivalence within ±{bound:.1f} ms at the family's level)."
    )


def _thesis_check(result: FamilyResult, reference_median: float) -> tuple[dict[str, Any], str]:
    """The run's lifecycle effect against the thesis's 4.4 % saving (of the direct arm's median)."""
    target = THESIS_LIFECYCLE_SHARE * reference_median
    ci = result.ci_adjusted
    share = f"the thesis's {THESIS_LIFECYCLE_SHARE:.1%} (≈ {target:.1f} ms of the {reference_median:.1f} ms median)"
    if ci is None or not math.isfinite(target):
        verdict, text = "not judged", f" Without a family-wise interval, {share} is neither confirmed nor ruled out."
    elif ci[1] < target:
        ends = f"the interval ends at {ci[1]:.1f} ms"
        verdict, text = "ruled out", f" {share[0].upper()}{share[1:]} is ruled out: {ends}."
    elif ci[0] > target:
        verdict, text = "exceeded", f" The saving exceeds {share}: the interval starts at {ci[0]:.1f} ms."
    elif result.significant:
        verdict, text = "consistent", f" The saving is consistent with {share}."
    else:
        verdict, text = "not resolved", f" {share[0].upper()}{share[1:]} is neither confirmed nor ruled out."
    return {"share": THESIS_LIFECYCLE_SHARE, "ms": target, "verdict": verdict}, text


def _in_function(rows: Rows | None, slow: str, fast: str, result: FamilyResult) -> tuple[dict[str, Any] | None, str]:
    """In-function time (main → end, or start→die − start→ready without the stamps) beside a lifecycle
    finding, at the family's level."""
    if rows is None or slow not in rows or fast not in rows:
        return None, ""
    (how_a, a), (how_b, b) = in_function_ms(rows[slow]), in_function_ms(rows[fast])
    if a.size < 2 or b.size < 2 or how_a != how_b:
        return None, ""
    what = "main → end" if how_a.startswith("function_us") else "start→die − start→ready"
    level = result.confidence_adjusted if math.isfinite(result.confidence_adjusted) else 0.95
    d, ci = welch_interval(a, b, level)
    ci_text = f", CI {ci[0]:.1f} to {ci[1]:.1f} ms at the same level" if ci else ""
    entry = {
        "metric": how_a,
        "estimate": d,
        "ci": list(ci) if ci else None,
        "confidence": level,
        "estimator": "difference of means (Welch t interval)",
        "median": {slow: float(np.median(a)), fast: float(np.median(b))},
    }
    return entry, f" In-function time ({what}), {slow} − {fast}: {d:.1f} ms{ci_text}."


def _word(
    p: _Pending, result: FamilyResult | None, values: Mapping[str, Mapping[str, np.ndarray]], b: _Builder
) -> dict[str, Any]:
    """The sentence and the fields of one judged finding."""
    slow, fast = p.slow, p.fast
    base: dict[str, Any] = {
        "topic": p.topic,
        "kind": p.kind,
        "scenarios": [slow, fast],
        "differs_in": list(p.differs_in),
        "comparison_kind": p.comparison_kind,
    } | ({"role": p.role} if p.role else {})
    if p.kind in (LIFECYCLE_SAVING, "run_phase_saving"):
        assert result is not None
        metric = RUN_PHASE if p.kind == "run_phase_saving" else LIFECYCLE
        median = float(np.median(values[slow][metric]))
        subject = factor_subject(b.catalogue, slow, fast, p.differs_in, p.subject)
        subject = subject if p.kind == LIFECYCLE_SAVING else f"{subject} (start→die alone)"
        text = saving_text(result, subject=subject, slow=slow, fast=fast, reference_median=median)
        extra: dict[str, Any] = {}
        if metric == LIFECYCLE:
            bound, more = _rules_out(result)
            text += more
            extra["rules_out_beyond_ms"] = bound
            s_slow, s_fast = b.catalogue.get(slow), b.catalogue.get(fast)
            if s_slow and s_fast and s_slow.thesis_role == "direct" and s_fast.thesis_role == "injected":
                extra["thesis"], more = _thesis_check(result, median)
                text += more
            extra["in_function"], more = _in_function(b.rows, slow, fast, result)
            text += more
        return base | {"text": text, "estimate": result.estimate, "unit": "ms", "metric": metric} | extra
    if p.kind == CONTROL_TOPIC:
        assert result is not None
        text = saving_text(result, subject=f"A/A control ({slow} is identical to {fast})", slow=slow, fast=fast)
        verdict = (
            " The run's false-positive check failed: see the warning."
            if result.significant
            else " The run's false-positive check passed."
        )
        bound, more = _rules_out(result)
        info, in_fn = _in_function(b.rows, slow, fast, result)
        return base | {
            "text": text + verdict + more + in_fn,
            "estimate": result.estimate,
            "unit": "ms",
            "metric": LIFECYCLE,
            "rules_out_beyond_ms": bound,
            "in_function": info,
        }
    if p.kind in (CONNECT_SPEEDUP, "burst_scaling"):
        assert result is not None
        metric = "connect_us" if p.kind == CONNECT_SPEEDUP else LIFECYCLE
        what = "ratio of connect times" if p.kind == CONNECT_SPEEDUP else "ratio of lifecycles"
        ratio, ci, tail = _ratio_text(result, slow, fast, what)
        med_s, med_f = float(np.median(values[slow][metric])), float(np.median(values[fast][metric]))
        if p.kind == CONNECT_SPEEDUP:
            medians = f"median connect {med_f:.0f} µs with {fast} vs {med_s:.0f} µs with {slow}"
            if not result.significant:
                text = (
                    f"Connection time: {fast} and {slow} are not distinguishable at this sample size "
                    f"({medians}; {tail})."
                )
            elif ratio >= 1:
                text = (
                    f"Getting a usable connection is {ratio:.1f}× faster with {fast} than {slow} ({medians}; {tail})."
                )
            else:
                text = (
                    f"Getting a usable connection is {1 / ratio:.1f}× slower with {fast} than {slow} "
                    f"({medians}; {tail})."
                )
        else:
            n_top = p.extra["n"]
            medians = f"median {med_s:.1f} ms started {n_top} at once against {med_f:.1f} ms alone"
            if not result.significant:
                text = (
                    f"Started {n_top} at once, a direct cold start is not distinguishable from one started alone "
                    f"at this sample size ({medians}; {tail})."
                )
            else:
                text = (
                    f"Started {n_top} at once, a direct cold start takes {ratio:.2f}× as long as alone ({medians}; "
                    f"{tail}); a ratio well above 1 is the serialised start-up of thesis Fig. 2."
                )
        if p.kind == "burst_scaling":  # named as the curve runs: alone first
            base["scenarios"] = [fast, slow]
        else:
            text = kind_label(p.comparison_kind, p.differs_in) + text
        return base | {"text": text, "estimate": ratio, "unit": "x", "metric": metric, "ratio_ci_adjusted": ci}
    raise ValueError(f"unknown finding kind {p.kind!r}")


def build_findings(
    values: Mapping[str, Mapping[str, np.ndarray]],
    summary_scenarios: Mapping[str, Any],
    delays: Mapping[str, float],
    environment: Mapping[str, Any],
    catalogue: Catalogue,
    *,
    alpha: float = 0.05,
    blocks: BlocksByScenario | None = None,
    stopping: Mapping[str, Any] | None = None,
    rows: Rows | None = None,
) -> FindingsResult:
    """Every declared finding whose scenarios ran (with at least two successful starts each), in
    catalogue order, then the primary delay slope and the burst scaling; all judged as one family."""
    b = _Builder(values, blocks, summary_scenarios, catalogue, rows, alpha)
    present = list(values)
    for scenario in catalogue:
        if scenario.id not in values:
            continue
        for ref in catalogue.references_of(scenario.id, present):
            if not b.have(ref.scenario, scenario.id):
                continue
            if ref.control:
                b.location(CONTROL_TOPIC, CONTROL_TOPIC, scenario.id, ref.scenario, "", LIFECYCLE, role="control")
            for finding in ref.findings:
                if finding.kind == LIFECYCLE_SAVING:
                    b.location(LIFECYCLE_SAVING, finding.topic, ref.scenario, scenario.id, finding.subject, LIFECYCLE)
                    if ref.headline:
                        b.location(
                            "run_phase_saving",
                            finding.topic + RUN_PHASE_TOPIC_SUFFIX,
                            ref.scenario,
                            scenario.id,
                            finding.subject,
                            RUN_PHASE,
                        )
                elif finding.kind == CONNECT_SPEEDUP:
                    b.ratio(CONNECT_SPEEDUP, finding.topic, ref.scenario, scenario.id, "connect_us")
                elif finding.kind == PREDICTABILITY:
                    b.variance(finding.topic, ref.scenario, scenario.id, finding.subject)
                else:
                    raise ValueError(f"{scenario.id}: unknown finding kind {finding.kind!r}")
    for label in catalogue.burst_scaling:
        curve: dict[int, str] = {}
        for name in present:
            s = catalogue.get(name)
            if s is not None and s.burst_series == label and b.have(name):
                curve[s.burst] = name
        if 1 in curve and len(curve) > 1:
            top = max(curve)
            b.ratio("burst_scaling", "burst", curve[top], curve[1], LIFECYCLE)
            b.pending[-1].extra["n"] = top

    series = _primary_series(catalogue, values, delays)
    has_slope = series is not None and len({d for d, v in series[0].values() if v.size}) >= 2
    k = sum(1 for p in b.pending if p.comparison is not None) + sum(
        1 for p in b.pending if p.comparison is None and math.isfinite(p.p_value)
    )
    k += 1 if has_slope else 0
    k = max(k, 1)
    confidence = 1.0 - alpha / k

    comps = [p.comparison for p in b.pending if p.comparison is not None]
    judged = {r.name: r for r in family_findings(comps, alpha=alpha, family_size=k)} if comps else {}
    fit: DelayFit | FitRefused | None = None
    if has_slope and series is not None:
        fit = checked_delay_fit(series[0], LIFECYCLE, reference=series[1], confidence=confidence)

    # Holm over every test of the family: location tests, variance tests and the slope.
    raw: list[float] = []
    for p in b.pending:
        if p.comparison is not None:
            raw.append(judged[p.comparison.name].p_value)
        else:
            raw.append(p.p_value)
    slope_p = fit.p if isinstance(fit, DelayFit) else math.nan
    adjusted = holm([*raw, slope_p])
    for p, p_adj in zip(b.pending, adjusted, strict=False):
        if p.comparison is not None:
            judged[p.comparison.name].p_adjusted = p_adj
            judged[p.comparison.name].family_size = k
        else:
            p.extra["p_adjusted"] = p_adj
    slope_p_adj = adjusted[-1]

    _use_confidence_sequences(judged, stopping, values, blocks, alpha=alpha, k=k)

    out: list[dict[str, Any]] = []
    command = environment.get("command")
    warnings: list[dict[str, str]] = []
    for p in b.pending:
        if p.comparison is not None:
            result = judged[p.comparison.name]
            entry = _word(p, result, values, b)
            if "confidence sequence" in result.estimator:
                entry["text"] += (
                    " The interval is the confidence sequence of the per-block differences (mean), valid although "
                    "the stopping rule chose the run's length by looking at it."
                )
            if p.kind == CONTROL_TOPIC:
                from .familywise import aa_control_warning

                warning = aa_control_warning(result, scenario=p.slow)
                if warning:
                    warnings.append(warning)
            ci = result.ci_adjusted
            if result.unit == LOG_UNIT:
                entry["ci_adjusted_log"] = list(ci) if ci else None
                entry["ci_adjusted_ratio"] = entry.get("ratio_ci_adjusted")
            entry |= {
                "comparison": result.name,
                "significant": bool(result.significant),
                "p_value": result.p_value,
                "p_adjusted": result.p_adjusted,
                # In the finding's unit: a ratio's interval as a ratio (its log-scale interval kept beside it).
                "ci_adjusted": _as_list(entry.pop("ratio_ci_adjusted", None)) or (list(ci) if ci else None),
                "ci": _as_list(entry.get("ci_adjusted_ratio")) or (list(ci) if ci else None),
                "confidence_adjusted": result.confidence_adjusted,
                "estimator": result.estimator + (" on log values, shown as a ratio" if result.unit == LOG_UNIT else ""),
                "design": result.design,
                "n": result.n,
                "family_size": k,
                "notes": list(result.notes),
            }
            if result.details:
                entry["fit"] = result.details
        else:  # the variance finding
            entry = _variance_entry(p, summary_scenarios, alpha=alpha, k=k, confidence=confidence)
            entry |= {"differs_in": list(p.differs_in), "comparison_kind": p.comparison_kind}
            entry["text"] = kind_label(p.comparison_kind, p.differs_in) + entry["text"]
        out.append(entry | ({"command": command} if command else {}))
    if fit is not None:
        out.append(
            _slope_entry(fit, slope_p_adj, alpha=alpha, k=k, confidence=confidence)
            | ({"command": command} if command else {})
        )
    family = {
        "alpha": alpha,
        "size": k,
        "confidence_adjusted": confidence,
        "method": "Bonferroni-level intervals: lifecycle effects adjusted for the engine phases and the runtime's "
        "start (ANCOVA, t interval), other locations Hodges–Lehmann (Mann–Whitney / Wilcoxon signed-rank inverted); "
        "Holm-adjusted p over every test of the family",
        "significant": sum(1 for f in out if f.get("significant")),
    }
    return FindingsResult(json_safe(out), json_safe(family), judged, warnings, fit)


def _variance_entry(
    p: _Pending, scenarios: Mapping[str, Any], *, alpha: float, k: int, confidence: float
) -> dict[str, Any]:
    v_d, v_s = scenarios[p.slow]["lifecycle_ms"], scenarios[p.fast]["lifecycle_ms"]
    p_adj = p.extra.get("p_adjusted", math.nan)
    significant = bool(math.isfinite(p_adj) and p_adj <= alpha)
    verdict = (
        "the variances differ at the family-wise level"
        if significant
        else "the variances are not distinguishable at this sample size"
    )
    who = p.subject or p.fast
    text = (
        f"Lifecycle variance is {v_s['variance']:.2f} ms² with {who} vs {v_d['variance']:.2f} ms² {p.slow}; "
        f"p99 {v_s['p99']:.1f} vs {v_d['p99']:.1f} ms (Brown–Forsythe: p = {p.p_value:.2g}, "
        f"{_holm_text(p_adj, k)}): {verdict}."
    )
    ratio = v_s["variance"] / v_d["variance"] if v_d["variance"] else math.nan
    return {
        "topic": p.topic,
        "kind": PREDICTABILITY,
        "scenarios": [p.slow, p.fast],
        "text": text,
        "estimate": ratio,
        "unit": "ratio",
        "metric": LIFECYCLE,
        "significant": significant,
        "p_value": p.p_value,
        "p_adjusted": p_adj,
        "ci_adjusted": None,
        "ci": None,
        "confidence_adjusted": confidence,
        "estimator": VARIANCE_ESTIMATOR,
        "family_size": k,
    }


def _slope_entry(
    fit: DelayFit | FitRefused, p_adj: float, *, alpha: float, k: int, confidence: float
) -> dict[str, Any]:
    level = f"{confidence:.2%}".replace(".00%", "%")
    if isinstance(fit, FitRefused):
        return {
            "topic": "delay",
            "kind": "delay_slope",
            "scenarios": fit.scenarios,
            "text": f"No delay slope: {fit.reason}.",
            "estimate": None,
            "unit": "ms/ms",
            "metric": LIFECYCLE,
            "significant": False,
            "p_value": None,
            "p_adjusted": None,
            "ci_adjusted": None,
            "ci": None,
            "confidence_adjusted": confidence,
            "estimator": "least-squares slope over individual cold starts",
            "family_size": k,
            "refused": fit.reason,
        }
    ci = fit.slope_ci
    significant = ci is not None and (ci[0] > 0 or ci[1] < 0)
    ci_text = f"family-wise {level} CI {ci[0]:.2f} to {ci[1]:.2f} ms/ms" if ci else f"no family-wise {level} interval"
    where = ", ".join(fit.scenarios)
    if significant:
        text = (
            f"Each millisecond of handshake delay adds {fit.slope:.2f} ms to a direct cold start ({ci_text}; "
            f"{_holm_text(p_adj, k)}; a slope of 1 means the delay reaches the lifecycle undiminished), "
            f"fitted over {where}."
        )
    else:
        text = (
            f"The lifecycle's growth with the handshake delay is not distinguishable from zero at this sample size "
            f"({ci_text}, which includes 0; {_holm_text(p_adj, k)}), fitted over {where}."
        )
    return {
        "topic": "delay",
        "kind": "delay_slope",
        "scenarios": list(fit.scenarios),
        "text": text,
        "estimate": fit.slope,
        "unit": "ms/ms",
        "metric": LIFECYCLE,
        "significant": bool(significant),
        "p_value": fit.p,
        "p_adjusted": p_adj,
        "ci_adjusted": list(ci) if ci else None,
        "ci": list(ci) if ci else None,
        "confidence_adjusted": confidence,
        "estimator": "least-squares slope over individual cold starts (t interval)",
        "family_size": k,
        "levels": sorted({float(r["delay_ms"]) for r in fit.table if r.get("delay_ms") is not None}),
    }


def _use_confidence_sequences(
    judged: dict[str, FamilyResult],
    stopping: Mapping[str, Any] | None,
    values: Mapping[str, Mapping[str, np.ndarray]],
    blocks: BlocksByScenario | None,
    *,
    alpha: float,
    k: int,
) -> None:
    """A stopped run chose its size by looking at the headline comparisons: their findings take the
    confidence sequence (valid under optional stopping) at the family's share alpha/k."""
    if not stopping or not stopping.get("headline") or blocks is None:
        return
    from .phase_effects import block_differences
    from .sequential import DEFAULT_MIN_BLOCKS, DEFAULT_TARGET_BLOCKS, Look, StoppingRule

    rule_record = stopping.get("rule") or {}
    headline = [h for h in stopping["headline"] if h.get("metric") == LIFECYCLE]
    looks = {}
    for h in headline:
        name = comparison_name(h["b"], h["a"], LIFECYCLE)  # findings compare reference − scenario
        diffs = block_differences(h["b"], h["a"], LIFECYCLE, blocks)
        if name in judged and diffs is not None:
            looks[name] = Look(diffs, float(np.median(values[h["b"]][LIFECYCLE])), "ms")
    if not looks:
        return
    rule = StoppingRule(
        None,
        max_time_s=1.0,
        alpha=min(0.5, alpha * len(looks) / k),  # alpha_each = alpha / k, the finding's share of the family
        min_blocks=int(rule_record.get("min_blocks") or DEFAULT_MIN_BLOCKS),
        target_blocks=float(rule_record.get("target_blocks") or DEFAULT_TARGET_BLOCKS),
    )
    rule.update(looks, cold_starts=0, elapsed_s=0.0)
    for name, cs in rule.family_results().items():
        cs.family_size = k
        cs.alpha = alpha
        cs.confidence_adjusted = 1.0 - alpha / k
        cs.p_adjusted = min(1.0, cs.p_value * k) if math.isfinite(cs.p_value) else math.nan
        cs.notes.append("the run was stopped by the stopping rule: interval from the confidence sequence")
        judged[name] = cs
