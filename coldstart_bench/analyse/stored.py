"""Analysis of a stored run (a directory with samples.csv and summary.json), without measuring:
re-rendering its report, its terminal summary, and the gate's comparison with a baseline run.

A stored run is re-analysed with the settings it recorded (alpha, seed, bootstrap resamples,
expectation policy, regression limit, gate rules, expectations, plan, baseline), so the files
come out as the end of the run wrote them. Its scenarios are described by the current catalogue
(a label fixed there shows up in the re-rendered report); scenarios the catalogue does not know
(from a scenario file) by the metadata summary.json carries since version 2.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalogue import Catalogue, Finding, Reference, Scenario, default_catalogue
from ..results import ResultFormatError, RunResult, load_result
from ..samples import Sample
from .baseline import SAMPLES_FILE, BaselineError, load_baseline
from .gate import GateResult, GateRuleError, compare_with_baseline, parse_gate_rules
from .run import AnalysisConfig
from .stats import values_by_scenario

DESELECTED_NOTE = "scenario deselected"


class StoredRunError(ValueError):
    """A run directory cannot be read; the message names the path and why."""


@dataclass
class StoredRun:
    directory: Path
    samples: list[Sample]
    result: RunResult
    notes: list[str] = field(default_factory=list)  # what could not be reproduced, and why


def load_run(directory: Path) -> StoredRun:
    """The samples and the result of a run directory (any summary version this package reads)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise StoredRunError(f"{directory} is not a run directory (expected samples.csv and summary.json in it)")
    try:
        baseline = load_baseline(directory)  # the same checks and messages as --bench-baseline
    except BaselineError as exc:
        raise StoredRunError(str(exc)) from None
    try:
        result = load_result(directory)
    except ResultFormatError as exc:
        raise StoredRunError(str(exc)) from None
    return StoredRun(directory, baseline.samples, result)


# --- the run's scenarios ------------------------------------------------------------------------
_SCENARIO_FIELDS = {f.name for f in dataclasses.fields(Scenario)}


def scenario_from_declared(declared: Mapping[str, Any]) -> Scenario:
    """The catalogue entry summary.json recorded for a scenario (Scenario.declared's inverse)."""
    values = {k: v for k, v in declared.items() if k in _SCENARIO_FIELDS}
    values["references"] = tuple(
        Reference(
            str(r["scenario"]),
            headline=r.get("role") == "headline",
            control=r.get("role") == "control",
            findings=tuple(Finding(str(f["kind"]), str(f["topic"]), str(f.get("subject", ""))) for f in r["findings"]),
            pulled=bool(r.get("pulled", False)),
        )
        for r in declared.get("references") or []
    )
    values["expectations"] = tuple(declared.get("expectations") or ())
    return Scenario(**values)


def catalogue_for(result: RunResult, catalogue: Catalogue | None = None) -> Catalogue:
    """`catalogue` (default: the built-in one, with every burst size the run has) plus the
    recorded metadata of the run's scenarios it does not know."""
    if catalogue is None:
        bursts = sorted({s.burst for s in result.scenarios.values() if s.burst > 1} | {1, 2, 4, 8})
        catalogue = default_catalogue(tuple(bursts))
    for sid, scenario in sorted(result.scenarios.items()):  # by id, as register_user_scenarios adds them
        if not catalogue.knows(sid) and scenario.declared:
            try:
                catalogue.register(scenario_from_declared(scenario.declared))
            except (KeyError, TypeError, ValueError) as exc:
                raise StoredRunError(f"scenario {sid!r}: its recorded metadata is unreadable: {exc}") from None
    return catalogue


# --- the run's settings -------------------------------------------------------------------------
def _float(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else default


def analysis_config(run: StoredRun, catalogue: Catalogue) -> AnalysisConfig:
    """The AnalysisConfig the run was analysed with, as far as summary.json recorded it."""
    from .expectations import parse_expectation

    recorded = run.result.analysis
    defaults = AnalysisConfig()
    try:
        expectations = [parse_expectation(str(v["expectation"])) for v in run.result.verdicts]
    except (KeyError, ValueError) as exc:
        raise StoredRunError(f"{run.directory}: a recorded expectation cannot be read: {exc}") from None
    absolute = [g for g in run.result.gate if g.get("kind") == "absolute"]
    rules_text = "\n".join(f"{g['scenario']}.{g['metric']}.{g['stat']} {g['limit_text']}" for g in absolute)
    try:
        gate_rules = parse_gate_rules(rules_text)
    except (GateRuleError, KeyError) as exc:
        raise StoredRunError(f"{run.directory}: a recorded gate rule cannot be read: {exc}") from None
    baseline = None
    baseline_path = recorded.get("baseline")
    if baseline_path:
        try:
            baseline = load_baseline(Path(baseline_path))
        except BaselineError as exc:
            run.notes.append(f"the baseline comparison is not reproduced: {exc}")
    return AnalysisConfig(
        alpha=_float(recorded.get("alpha"), defaults.alpha),
        expectations=expectations,
        expectation_policy=str(recorded.get("expectation_policy") or defaults.expectation_policy),
        gate_rules=gate_rules,
        baseline=baseline,
        max_regression=_float(recorded.get("max_regression"), defaults.max_regression),
        bootstrap_resamples=int(_float(recorded.get("bootstrap_resamples"), defaults.bootstrap_resamples)),
        seed=int(_float(recorded.get("seed"), defaults.seed)),
        catalogue=catalogue,
        plan=run.result.plan,
        deselected={str(g["scenario"]) for g in absolute if str(g.get("note", "")).startswith(DESELECTED_NOTE)},
    )


# --- compare ------------------------------------------------------------------------------------
@dataclass
class RunComparison:
    results: list[GateResult]
    only_base: list[str]
    only_run: list[str]

    @property
    def failed(self) -> bool:
        return any(not r.passed for r in self.results)

    def lines(self) -> list[str]:
        out = [r.line() for r in self.results]
        if self.only_run:
            out.append(f"not in the baseline, not compared: {', '.join(self.only_run)}")
        if self.only_base:
            out.append(f"not in this run, not compared: {', '.join(self.only_base)}")
        if not self.results:
            out.append("no scenario in common: nothing compared")
        return out


def compare_runs(
    base: Sequence[Sample], run: Sequence[Sample], *, max_regression: float, alpha: float
) -> RunComparison:
    """The gate's relative rule (one-sided Mann–Whitney U, Holm across the comparisons, and a median
    change above max_regression) between a baseline run and a run."""
    current, baseline = values_by_scenario(run), values_by_scenario(base)
    results = compare_with_baseline(current, baseline, max_regression=max_regression, alpha=alpha)
    return RunComparison(
        results,
        only_base=[s for s in baseline if s not in current],
        only_run=[s for s in current if s not in baseline],
    )


def samples_of(directory: Path) -> list[Sample]:
    """A run directory's (or a samples.csv file's) samples, with the baseline loader's checks."""
    try:
        return load_baseline(Path(directory)).samples
    except BaselineError as exc:
        raise StoredRunError(str(exc).replace("baseline ", "", 1)) from None


__all__ = [
    "SAMPLES_FILE",
    "RunComparison",
    "StoredRun",
    "StoredRunError",
    "analysis_config",
    "catalogue_for",
    "compare_runs",
    "load_run",
    "samples_of",
]
