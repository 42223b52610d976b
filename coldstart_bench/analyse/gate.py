"""Regression gate: absolute rules on this run, and a relative comparison with a baseline run.

Absolute rules (ini option ``bench_gate``), one a line::

    <scenario>.<metric>.<stat> <= <value>      (or <)
    socket.connect_us.p50 <= 2000
    direct.lifecycle_ms.p95 < 1500             # comments and blank lines are ignored

Relative rules: for every scenario and primary metric in both runs, the gate fails only when a
one-sided Mann–Whitney U test says the current run is slower (Holm-corrected across the metrics
compared, at alpha) *and* the median grew by more than the allowed regression.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..samples import ALL_METRICS, PRIMARY_METRICS
from .stats import STAT_NAMES, Values, as_array, json_safe, statistic
from .textfmt import percent_change, pvalue, value


class BaselineValues(Protocol):
    """What the relative gate needs of a baseline: its samples' values by scenario and metric."""

    def values(self) -> Mapping[str, Mapping[str, Values]]: ...


RULE_SYNTAX = "<scenario>.<metric>.<stat> <= <value>  (or '<'; stat one of " + ", ".join(STAT_NAMES) + ")"

# Fewer values than this on a side and a rank test cannot reach significance at 0.05: say so.
MIN_N_RELATIVE = 5


class GateRuleError(ValueError):
    """A bench_gate rule that cannot be understood: a usage error, not a crash."""


@dataclass(frozen=True)
class GateRule:
    scenario: str
    metric: str
    stat: str  # as written (p50 stays p50 in messages)
    op: str  # "<=" or "<"
    limit: float
    limit_text: str
    line_no: int = 0

    def __str__(self) -> str:
        return f"{self.scenario}.{self.metric}.{self.stat} {self.op} {self.limit_text}"


_RULE = re.compile(
    r"^(?P<scenario>[A-Za-z0-9_][A-Za-z0-9_\-]*)\.(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\.(?P<stat>[A-Za-z0-9_]+)"
    r"\s*(?P<op><=|<|>=|>|==|=)\s*(?P<value>[^\s<>=]\S*)$"
)


def parse_gate_rules(text: str) -> list[GateRule]:
    """One rule a line (';' also separates rules, for -o on a command line); blank lines and '#'
    comments ignored. Raises GateRuleError naming the line, what is wrong and the syntax."""
    rules: list[GateRule] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        for part in line.split("#", 1)[0].split(";"):
            body = part.strip()
            if body:
                rules.append(_parse_rule(body, line_no))
    return rules


def _parse_rule(body: str, line_no: int) -> GateRule:
    where = f"bench_gate line {line_no} {body!r}"
    m = _RULE.match(body)
    if not m:
        raise GateRuleError(f"{where}: cannot parse; expected {RULE_SYNTAX}")
    if m["op"] not in ("<=", "<"):
        raise GateRuleError(f"{where}: operator {m['op']!r} not allowed; a gate rule is an upper limit, use <= or <")
    if m["metric"] not in ALL_METRICS:
        raise GateRuleError(f"{where}: unknown metric {m['metric']!r}; expected one of {', '.join(ALL_METRICS)}")
    if m["stat"] not in STAT_NAMES:
        raise GateRuleError(f"{where}: unknown statistic {m['stat']!r}; expected one of {', '.join(STAT_NAMES)}")
    try:
        limit = float(m["value"])
    except ValueError:
        raise GateRuleError(f"{where}: limit {m['value']!r} is not a number; expected {RULE_SYNTAX}") from None
    if not math.isfinite(limit):
        raise GateRuleError(f"{where}: limit must be a finite number, got {m['value']!r}")
    return GateRule(m["scenario"], m["metric"], m["stat"], m["op"], limit, m["value"], line_no)


def parse_max_regression(text: str) -> float:
    """'10%' -> 0.10, '0.1' -> 0.10. A bare number above 1 is refused as ambiguous (10 means 10%?)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(
            f"--bench-max-regression expects a percentage like '10%' or a fraction like '0.1', got {text!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"--bench-max-regression must be a non-negative percentage, got {text!r}")
    if not raw.endswith("%") and value >= 1:
        raise ValueError(
            f"--bench-max-regression {text!r} is ambiguous: write '{raw}%' for a percentage or a fraction below 1"
        )
    return value


@dataclass
class GateResult:
    passed: bool
    kind: str  # "absolute" | "baseline"
    scenario: str
    metric: str
    stat: str
    observed: float
    limit: float
    limit_text: str = ""
    baseline: float = math.nan
    change: float = math.nan
    p: float = math.nan  # raw one-sided Mann–Whitney p
    p_holm: float = math.nan
    n: int = 0
    n_baseline: int = 0
    note: str = ""
    skipped: bool = False  # rule about a scenario not in this run: passes, says so

    def line(self) -> str:
        verdict = "GATE SKIP" if self.skipped else "GATE OK" if self.passed else "GATE FAIL"
        if self.kind == "absolute":
            text = (
                f"{verdict} {self.scenario} {self.metric} {self.stat} "
                f"observed={value(self.observed)} limit{self.limit_text}"
            )
        else:
            text = (
                f"{verdict} {self.scenario} {self.metric} {self.stat} observed={value(self.observed)} "
                f"baseline={value(self.baseline)} change={percent_change(self.change)} limit=+{self.limit * 100:g}% "
                f"p={pvalue(self.p_holm)}"
            )
        return text + (f" ({self.note})" if self.note else "")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = json_safe({**self.__dict__, "line": self.line()})
        return d


def evaluate_rules(
    rules: Sequence[GateRule], values: Mapping[str, Mapping[str, Values]], deselected: Collection[str] = ()
) -> list[GateResult]:
    """Absolute rules on this run. A rule for a scenario not in the run passes with a note (users
    select scenarios with -k); a rule for a scenario that ran but has no value fails."""
    out = []
    for r in rules:
        present = r.scenario in values
        arr = as_array(values[r.scenario].get(r.metric, [])) if present else as_array([])
        observed = statistic(arr, r.stat)
        if not present:
            why = "scenario deselected (-k/-m)" if r.scenario in deselected else "scenario not in this run"
            passed, note = True, f"{why}, rule not applied"
        elif math.isnan(observed):
            passed, note = False, "no successful samples with this metric"
        else:
            passed, note = (observed <= r.limit if r.op == "<=" else observed < r.limit), ""
        out.append(
            GateResult(
                passed,
                "absolute",
                r.scenario,
                r.metric,
                r.stat,
                observed,
                r.limit,
                f"{r.op}{r.limit_text}",
                n=int(arr.size),
                note=note,
                skipped=not present,
            )
        )
    return out


def compare_with_baseline(
    current: Mapping[str, Mapping[str, Values]],
    baseline: Mapping[str, Mapping[str, Values]],
    *,
    max_regression: float = 0.10,
    alpha: float = 0.05,
    metrics: Sequence[str] = PRIMARY_METRICS,
) -> list[GateResult]:
    """Relative gate: fail only on a significant (Holm-corrected, one-sided Mann–Whitney U) slow-down
    whose median change also exceeds max_regression. Scenarios missing on either side are not compared."""
    from .compare import holm, mann_whitney  # deferred: rule parsing runs at start-up, scipy is slow to load

    results: list[GateResult] = []
    for scenario in current:
        if scenario not in baseline:
            continue
        for metric in metrics:
            cur = as_array(current[scenario].get(metric, []))
            base = as_array(baseline[scenario].get(metric, []))
            if cur.size == 0 or base.size == 0:
                continue
            med_cur, med_base = float(np.median(cur)), float(np.median(base))
            change = med_cur / med_base - 1.0 if med_base > 0 else math.nan
            res = GateResult(
                True,
                "baseline",
                scenario,
                metric,
                "median",
                med_cur,
                max_regression,
                baseline=med_base,
                change=change,
                n=int(cur.size),
                n_baseline=int(base.size),
            )
            if cur.size < MIN_N_RELATIVE or base.size < MIN_N_RELATIVE:
                res.note = f"too few samples to test (n={cur.size}/{base.size}, needs {MIN_N_RELATIVE} a side)"
            else:
                _u, res.p = mann_whitney(cur, base, "greater")
            results.append(res)
    for res, p_adj in zip(results, holm([r.p for r in results]), strict=True):
        res.p_holm = p_adj
        significant = math.isfinite(p_adj) and p_adj < alpha
        exceeds = math.isfinite(res.change) and res.change > max_regression
        res.passed = not (significant and exceeds)
        if res.passed and significant:
            res.note = res.note or "slower, but within the allowed regression"
        elif res.passed and exceeds:
            res.note = res.note or "median above the limit, but not significant"
    return results


def evaluate_gate(
    rules: Sequence[GateRule],
    values: Mapping[str, Mapping[str, Values]],
    baseline: BaselineValues | None = None,
    *,
    max_regression: float = 0.10,
    alpha: float = 0.05,
    deselected: Collection[str] = (),
) -> list[GateResult]:
    results = evaluate_rules(rules, values, deselected)
    if baseline is not None:
        results += compare_with_baseline(values, baseline.values(), max_regression=max_regression, alpha=alpha)
    return results
