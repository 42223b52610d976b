"""Declarative expectations about a run, and their statistical verdicts.

Syntax (one expectation per string)::

    <scenario>.<metric>.<stat> <op> <rhs> [(<test>[, alpha=<a>][, min_n=<n>])]

    <op>   one of  <  <=  >  >=
    <rhs>  <scenario>.<metric>.<stat> [* <number> | / <number>]
           | <number> * <scenario>.<metric>.<stat>
           | <number>
    <stat> mean, median, p50, p95, p99, variance, stdev
    <test> bootstrap (default; any stat), mannwhitney (mean/median/p50 against another scenario),
           levene (mean-centred, the thesis's test) or brown-forsythe (median-centred; variance/stdev)

Examples::

    socket.connect_us.median <= direct.connect_us.median / 2
    socket.lifecycle_ms.variance < direct.lifecycle_ms.variance (levene, alpha=0.05)
    direct-100ms.lifecycle_ms.median > direct-50ms.lifecycle_ms.median (mannwhitney)
    socket-100ms.connect_us.median < 10000

Every test yields a two-sided p-value and an observed direction; p-values are Holm-corrected
across the expectations of a run. Verdicts: ``pass`` (significant, expected direction),
``significantly_worse`` (significant, opposite direction), ``no_evidence`` (not significant),
``too_few_samples`` (fewer than min_n values on a side), ``skipped`` (a scenario is not in the run).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..samples import ALL_METRICS
from .stats import (
    MIN_N_FOR_PERCENTILE,
    STAT_NAMES,
    Values,
    as_array,
    bootstrap_distribution,
    bootstrap_distribution_two,
    json_safe,
    statistic,
)
from .textfmt import pvalue, value

PASS = "pass"
WORSE = "significantly_worse"
NO_EVIDENCE = "no_evidence"
TOO_FEW = "too_few_samples"
SKIPPED = "skipped"
STATUSES: tuple[str, ...] = (PASS, WORSE, NO_EVIDENCE, TOO_FEW, SKIPPED)

POLICIES: tuple[str, ...] = ("report", "fail", "strict")

TESTS: dict[str, str] = {
    "bootstrap": "bootstrap",
    "mannwhitney": "mannwhitney",
    "mann-whitney": "mannwhitney",
    "mwu": "mannwhitney",
    "levene": "levene",
    "brown-forsythe": "brown-forsythe",
    "levene-median": "brown-forsythe",
}
LOCATION_STATS = ("mean", "median", "p50")
SPREAD_STATS = ("variance", "stdev")

# Fewer values than this on a side and a verdict would be a coin toss; p95/p99 need more (stats.py).
DEFAULT_MIN_N = 10

SYNTAX = (
    "<scenario>.<metric>.<stat> <op> <rhs> [(<test>[, alpha=<a>][, min_n=<n>])], "
    "op one of < <= > >=, rhs '<scenario>.<metric>.<stat> [* or / <number>]' or '<number>', "
    "test one of bootstrap, mannwhitney, levene, brown-forsythe"
)

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_OPERAND = r"[A-Za-z0-9_][A-Za-z0-9_\-]*\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z0-9_]+"
_EXPR = re.compile(rf"^\s*(?P<lhs>{_OPERAND})\s*(?P<op><=|>=|<|>)\s*(?P<rhs>[^()]+?)\s*(?:\((?P<opts>[^()]*)\))?\s*$")
_RHS_OPERAND = re.compile(rf"^(?P<ref>{_OPERAND})\s*(?:(?P<mul>[*/])\s*(?P<num>{_NUM}))?$")
_RHS_LEFT_FACTOR = re.compile(rf"^(?P<num>{_NUM})\s*\*\s*(?P<ref>{_OPERAND})$")
_RHS_NUMBER = re.compile(rf"^{_NUM}$")


@dataclass(frozen=True)
class Operand:
    scenario: str
    metric: str
    stat: str

    def __str__(self) -> str:
        return f"{self.scenario}.{self.metric}.{self.stat}"


@dataclass(frozen=True)
class Expectation:
    text: str
    lhs: Operand
    op: str
    rhs: Operand | None = None  # another scenario's statistic ...
    factor: float = 1.0  # ... times this factor ("/ 2" is 0.5)
    constant: float | None = None  # or a fixed threshold
    test: str = "bootstrap"
    alpha: float | None = None  # None: the run's alpha
    min_n: int | None = None  # None: DEFAULT_MIN_N, raised to what the percentile needs

    @property
    def expected_sign(self) -> int:
        """−1 when lhs should be below the threshold, +1 when above."""
        return -1 if self.op in ("<", "<=") else 1

    @property
    def scenarios(self) -> tuple[str, ...]:
        return (self.lhs.scenario,) if self.rhs is None else (self.lhs.scenario, self.rhs.scenario)

    def required_n(self) -> int:
        if self.min_n is not None:
            return self.min_n
        stats = [self.lhs.stat] + ([self.rhs.stat] if self.rhs else [])
        return max([DEFAULT_MIN_N] + [MIN_N_FOR_PERCENTILE.get(s, 0) for s in stats])


def _operand(text: str, where: str) -> Operand:
    scenario, metric, stat = text.split(".")
    if metric not in ALL_METRICS:
        raise ValueError(f"{where}: unknown metric {metric!r} in {text!r}; expected one of {', '.join(ALL_METRICS)}")
    if stat not in STAT_NAMES:
        raise ValueError(f"{where}: unknown statistic {stat!r} in {text!r}; expected one of {', '.join(STAT_NAMES)}")
    return Operand(scenario, metric, stat)


def parse_expectation(text: str) -> Expectation:
    """Parse one expectation string; ValueError naming the problem and the expected syntax."""
    where = f"expectation {text.strip()!r}"
    m = _EXPR.match(text)
    if not m:
        raise ValueError(f"{where}: cannot parse; expected {SYNTAX}")
    lhs = _operand(m["lhs"], where)
    rhs_text = m["rhs"].strip()
    rhs: Operand | None = None
    factor = 1.0
    constant: float | None = None
    if mm := _RHS_OPERAND.match(rhs_text):
        rhs = _operand(mm["ref"], where)
        if mm["num"] is not None:
            num = float(mm["num"])
            if mm["mul"] == "/" and num == 0:
                raise ValueError(f"{where}: division by zero in {rhs_text!r}")
            factor = num if mm["mul"] == "*" else 1.0 / num
    elif mm := _RHS_LEFT_FACTOR.match(rhs_text):
        rhs = _operand(mm["ref"], where)
        factor = float(mm["num"])
    elif _RHS_NUMBER.match(rhs_text):
        constant = float(rhs_text)
    else:
        raise ValueError(f"{where}: cannot parse the right-hand side {rhs_text!r}; expected {SYNTAX}")
    if rhs is not None and factor <= 0:
        raise ValueError(f"{where}: the factor must be positive, got {factor:g}")

    test, alpha, min_n = "bootstrap", None, None
    for raw in (m["opts"] or "").split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = (p.strip() for p in item.partition("="))
        key = key.lower()
        if not sep:
            if key not in TESTS:
                raise ValueError(f"{where}: unknown test {item!r}; expected one of {', '.join(sorted(set(TESTS)))}")
            test = TESTS[key]
        elif key == "alpha":
            try:
                alpha = float(value)
            except ValueError:
                alpha = math.nan
            if not 0 < alpha < 1:
                raise ValueError(f"{where}: alpha must be a number between 0 and 1, got {value!r}")
        elif key == "min_n":
            if not value.isdigit() or int(value) < 2:
                raise ValueError(f"{where}: min_n must be an integer >= 2, got {value!r}")
            min_n = int(value)
        else:
            raise ValueError(f"{where}: unknown option {key!r}; expected a test name, alpha=<a> or min_n=<n>")

    if test != "bootstrap" and rhs is None:
        raise ValueError(f"{where}: {test} compares two scenarios; against a fixed number use the bootstrap")
    if test == "mannwhitney" and (lhs.stat not in LOCATION_STATS or rhs is None or rhs.stat not in LOCATION_STATS):
        raise ValueError(f"{where}: mannwhitney tests a location shift; use it with {', '.join(LOCATION_STATS)}")
    if test in ("levene", "brown-forsythe") and (lhs.stat not in SPREAD_STATS or rhs is None or rhs.stat != lhs.stat):
        raise ValueError(f"{where}: {test} compares spreads; use it with variance or stdev on both sides")
    return Expectation(
        text=" ".join(text.split()),
        lhs=lhs,
        op=m["op"],
        rhs=rhs,
        factor=factor,
        constant=constant,
        test=test,
        alpha=alpha,
        min_n=min_n,
    )


def parse_expectations(text: str) -> list[Expectation]:
    """Several expectations, one a line (ini style); blank lines and '#' comments ignored."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        try:
            out.append(parse_expectation(body))
        except ValueError as exc:
            raise ValueError(f"line {lineno}: {exc}") from None
    return out


@dataclass
class Verdict:
    expectation: Expectation
    status: str
    lhs_value: float = math.nan
    rhs_value: float = math.nan  # the threshold lhs is compared with (rhs statistic × factor, or constant)
    rhs_raw: float = math.nan  # rhs statistic before the factor
    n_lhs: int = 0
    n_rhs: int = 0
    min_n: int = 0
    test: str = ""
    p: float = math.nan  # two-sided, raw
    p_holm: float = math.nan
    alpha: float = 0.05
    direction: int = 0  # sign of lhs − threshold as estimated by the test
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return {
            PASS: "PASS",
            WORSE: "SIGNIFICANTLY WORSE",
            NO_EVIDENCE: "NO EVIDENCE",
            TOO_FEW: "TOO FEW SAMPLES",
            SKIPPED: "SKIPPED",
        }[self.status]

    def line(self) -> str:
        e = self.expectation
        head = f"EXPECT {self.label}: {e.text}"
        if self.status == SKIPPED:
            return f"{head} — {self.note}"
        obs = f"{e.lhs} = {value(self.lhs_value)}"
        if e.rhs is not None:
            scaled = f" × {value(e.factor)}" if e.factor != 1 else ""
            obs += f", {e.rhs} = {value(self.rhs_raw)}{scaled} → threshold {value(self.rhs_value)}"
        else:
            obs += f", threshold {value(self.rhs_value)}"
        if self.status == TOO_FEW:
            return f"{head} — {obs}; {self.note}"
        sig = "<" if self.p_holm < self.alpha else "≥"
        return (
            f"{head} — {obs}; {self.test} p{self.p_text()} (Holm {pvalue(self.p_holm)}) "
            f"{sig} alpha={self.alpha:g}" + (f"; {self.note}" if self.note else "")
        )

    def p_text(self) -> str:
        """'=0.012', or at the bootstrap's floor '≤ 2/(B+1) = 1.0e-03': no replicate fell on the other side
        of the threshold, so the p-value is only known to be at most that."""
        floor = self.extra.get("p_floor")
        if self.test == "bootstrap" and floor and math.isfinite(self.p) and self.p <= floor * (1 + 1e-9):
            return f" ≤ 2/(B+1) = {pvalue(floor)} (B = {self.extra.get('resamples')} resamples)"
        return f"={pvalue(self.p)}"

    def to_dict(self) -> dict[str, Any]:
        e = self.expectation
        d: dict[str, Any] = json_safe(
            {
                "expectation": e.text,
                "status": self.status,
                "metric": f"{e.lhs.metric}",
                "lhs": str(e.lhs),
                "op": e.op,
                "rhs": str(e.rhs) if e.rhs else None,
                "factor": e.factor,
                "constant": e.constant,
                "lhs_value": self.lhs_value,
                "rhs_value": self.rhs_raw,
                "threshold": self.rhs_value,
                "n_lhs": self.n_lhs,
                "n_rhs": self.n_rhs,
                "min_n": self.min_n,
                "test": self.test,
                "p": self.p,
                "p_text": self.p_text().lstrip("= ").strip(),
                "p_holm": self.p_holm,
                "alpha": self.alpha,
                "note": self.note,
                "line": self.line(),
                **self.extra,
            }
        )
        return d


def _sign(x: float) -> int:
    return 0 if math.isnan(x) or x == 0 else (1 if x > 0 else -1)


def _bootstrap_test(
    a: np.ndarray, b: np.ndarray | None, e: Expectation, resamples: int, seed: int
) -> tuple[float, int]:
    """Percentile-bootstrap test of lhs − threshold: two-sided p from the share of replicates on
    either side of zero (the CI-inversion p-value), and the sign of the point estimate."""
    if b is None:
        reps = bootstrap_distribution(a, e.lhs.stat, resamples=resamples, seed=seed) - float(e.constant or 0.0)
        point = statistic(a, e.lhs.stat) - float(e.constant or 0.0)
    else:
        assert e.rhs is not None
        reps = bootstrap_distribution_two(
            a, b, e.lhs.stat, e.rhs.stat, lambda x, y: x - e.factor * y, resamples=resamples, seed=seed
        )
        point = statistic(a, e.lhs.stat) - e.factor * statistic(b, e.rhs.stat)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return (math.nan, _sign(point))
    below = (np.sum(reps <= 0) + 1) / (reps.size + 1)
    above = (np.sum(reps >= 0) + 1) / (reps.size + 1)
    return (min(1.0, 2.0 * float(min(below, above))), _sign(point))


# Finding kinds whose claim an expectation can state, by the statistic it names.
_LOCATION_KINDS = ("lifecycle_saving", "connect_speedup", "control")
_SPREAD_KINDS = ("predictability",)


def _first_minus_second_sign(finding: Mapping[str, Any]) -> int:
    """The sign of (first scenario − second) as the finding estimated it."""
    estimate = finding.get("estimate")
    if not isinstance(estimate, int | float) or not math.isfinite(estimate):
        return 0
    if finding["kind"] == "connect_speedup":  # first / second
        return _sign(estimate - 1.0)
    if finding["kind"] == "predictability":  # variance of the second / of the first
        return _sign(1.0 - estimate)
    return _sign(estimate)


def _claimed_by(e: Expectation, finding: Mapping[str, Any]) -> bool:
    if e.rhs is None or e.factor != 1.0 or finding.get("p_adjusted") is None:
        return False
    scenarios = finding.get("scenarios") or []
    if sorted(scenarios) != sorted([e.lhs.scenario, e.rhs.scenario]) or len(set(scenarios)) != 2:
        return False
    if e.lhs.metric != e.rhs.metric or e.lhs.metric != finding.get("metric"):
        return False
    if finding.get("kind") in _SPREAD_KINDS:
        return e.test in ("levene", "brown-forsythe") and e.lhs.stat in SPREAD_STATS
    return finding.get("kind") in _LOCATION_KINDS and e.test == "mannwhitney" and e.lhs.stat in LOCATION_STATS


def _adopt(v: Verdict, findings: Sequence[Mapping[str, Any]]) -> bool:
    """Give `v` the verdict of the finding that judges the same claim; False when none does."""
    e = v.expectation
    finding = next((f for f in findings if _claimed_by(e, f)), None)
    if finding is None:
        return False
    sign = _first_minus_second_sign(finding)
    v.direction = sign if e.lhs.scenario == finding["scenarios"][0] else -sign
    v.test = str(finding.get("estimator", v.test))
    v.p = float(finding.get("p_value") or math.nan)
    v.p_holm = float(finding["p_adjusted"])
    v.alpha = float(finding.get("alpha", v.alpha) or v.alpha)
    if finding.get("significant"):
        v.status = PASS if v.direction == e.expected_sign else WORSE
    else:
        v.status = NO_EVIDENCE
    v.note = (
        f"the claim of the finding {finding.get('comparison') or ' vs '.join(finding['scenarios'])}: judged with it, "
        f"Holm over the {finding.get('family_size')} tests of the findings' family"
    )
    v.extra["judged_with"] = finding.get("comparison") or finding.get("topic")
    return True


def evaluate(
    expectations: Sequence[Expectation],
    values: Mapping[str, Mapping[str, Values]],
    *,
    alpha: float = 0.05,
    resamples: int = 2000,
    seed: int = 12345,
    findings: Sequence[Mapping[str, Any]] | None = None,
) -> list[Verdict]:
    """Verdicts for all expectations; `values[scenario][metric]` holds the successful samples' values.

    An expectation that states the claim of one of the run's `findings` (same two scenarios and metric,
    a location or spread claim as the finding is) takes the finding's verdict: its test, its p-value
    and its Holm adjustment over the findings' family, so a claim has one verdict everywhere. The
    others are Holm-adjusted among themselves."""
    from .compare import cliffs_delta, holm, levene, mann_whitney  # deferred: parsing runs at start-up

    verdicts: list[Verdict] = []
    for i, e in enumerate(expectations):
        v = Verdict(expectation=e, status=NO_EVIDENCE, test=e.test, alpha=e.alpha or alpha, min_n=e.required_n())
        verdicts.append(v)
        missing = [s for s in e.scenarios if s not in values]
        if missing:
            v.status = SKIPPED
            v.note = f"scenario {', '.join(missing)} not in this run"
            continue
        a = as_array(values[e.lhs.scenario].get(e.lhs.metric, []))
        b = as_array(values[e.rhs.scenario].get(e.rhs.metric, [])) if e.rhs else None
        v.n_lhs, v.n_rhs = int(a.size), int(b.size) if b is not None else 0
        v.lhs_value = statistic(a, e.lhs.stat)
        if e.rhs is not None and b is not None:
            v.rhs_raw = statistic(b, e.rhs.stat)
            v.rhs_value = v.rhs_raw * e.factor
        else:
            v.rhs_raw = v.rhs_value = float(e.constant if e.constant is not None else math.nan)
        smallest = min(v.n_lhs, v.n_rhs) if b is not None else v.n_lhs
        if smallest < v.min_n:
            v.status = TOO_FEW
            v.note = f"n={v.n_lhs}" + (f"/{v.n_rhs}" if b is not None else "") + f", needs at least {v.min_n} a side"
            continue
        if e.test == "bootstrap":
            v.p, v.direction = _bootstrap_test(a, b, e, resamples, seed + i)
            v.extra["p_floor"] = 2.0 / (resamples + 1)
            v.extra["resamples"] = resamples
        elif e.test == "mannwhitney":
            assert b is not None
            scaled = b * e.factor
            _u, v.p = mann_whitney(a, scaled, "two-sided")
            v.direction = _sign(cliffs_delta(a, scaled))
            v.extra["cliffs_delta"] = cliffs_delta(a, scaled)
        else:
            assert b is not None and e.rhs is not None
            # Scale the reference so its spread statistic is multiplied by the factor.
            scale = math.sqrt(e.factor) if e.lhs.stat == "variance" else e.factor
            center = "mean" if e.test == "levene" else "median"
            _w, v.p = levene(a, b * scale, center)
            v.direction = _sign(v.lhs_value - v.rhs_value)
    tested = [v for v in verdicts if v.status == NO_EVIDENCE and not _adopt(v, findings or ())]
    for v, p_adj in zip(tested, holm([v.p for v in tested]), strict=True):
        v.p_holm = p_adj
        if math.isnan(p_adj):
            v.note = "test undefined (constant samples?)"
        elif p_adj < v.alpha and v.direction == v.expectation.expected_sign:
            v.status = PASS
        elif p_adj < v.alpha and v.direction == -v.expectation.expected_sign:
            v.status = WORSE
    return verdicts


def verdicts_fail(verdicts: Sequence[Verdict], policy: str) -> bool:
    """ "report": never fails; "fail": fails on a significantly worse result only (noise cannot do
    that beyond alpha); "strict": fails unless every applicable expectation passed."""
    if policy not in POLICIES:
        raise ValueError(f"unknown expectation policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if policy == "report":
        return False
    if policy == "fail":
        return any(v.status == WORSE for v in verdicts)
    return any(v.status not in (PASS, SKIPPED) for v in verdicts)
