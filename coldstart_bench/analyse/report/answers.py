"""The questions a run answers, one per judged finding: what is asked, for which kind of function
and backend, the effect with its family-wise interval, the verdict, and what the run rules out.

Built from summary.json's `findings` (any version that has them) and the scenarios' declared
metadata (the current catalogue for runs that did not record it). Fields a finding lacks make its
cells "–", never an error. One convention throughout: a speed-up is the finding's estimate of
(the reference's connect time) ÷ (the compared arm's), and a difference is the compared arm minus
its reference, so a negative difference is a shorter cold start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Kinds of finding (analyse/findings.py) and the question each answers.
QUESTIONS: dict[str, str] = {
    "connect_speedup": "connection faster?",
    "run_phase_saving": "function finishes sooner?",
    "lifecycle_saving": "cold start shorter?",
    "predictability": "cold start more predictable?",
    "burst_scaling": "slower when started together?",
    "delay_slope": "handshake delay reaches the cold start?",
    "control": "A/A control clean?",
}

# Families of the catalogue in report order, with their section titles; others follow by name.
FAMILY_TITLES: dict[str, str] = {
    "thesis": "TCP: the thesis's scenarios",
    "extended": "TCP: beyond the thesis (no network, delay, fallback, return)",
    "pg": "PostgreSQL sessions",
    "tls": "TLS 1.3 sessions",
    "pg-tls": "PostgreSQL over TLS 1.3",
    "lang": "Languages (Node.js, C, fd 3)",
    "pg-proxy": "Against the proxy (PgBouncer)",
    "runtime": "Runtimes and the relay",
    "rtt": "A backend at a network distance (round-trip time)",
    "burst": "Bursts of concurrent cold starts",
    "control": "A/A control",
}
_LANGUAGES = {"node": "Node.js", "c": "C", "python": "Python"}
VERDICT_NOTE = (
    "yes / no: the family-wise interval excludes no difference, in the asked direction or against it; "
    "n.d.: not distinguishable at this sample size (no effect is claimed)"
)


@dataclass
class Answer:
    question: str
    context: str  # what kind of function and backend: "TCP", "PostgreSQL", "Node.js", "TCP · no network"
    pair: str  # "socket vs direct"
    effect: str
    interval: str
    verdict: str  # "yes" | "no" | "n.d." | "passed" | "FAILED" | "–"
    rules_out: str
    family: str
    kind: str
    subject: str = ""
    reference: str = ""
    significant: bool | None = None
    estimate: float | None = None  # as displayed: ratio, or subject − reference
    ci: tuple[float, float] | None = None  # as displayed
    unit: str = ""
    finding: Mapping[str, Any] = field(default_factory=dict)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _interval(f: Mapping[str, Any], ratio: bool) -> tuple[float, float] | None:
    keys = ("ratio_ci_adjusted", "ci_adjusted_ratio", "ci_adjusted") if ratio else ("ci_adjusted",)
    for key in keys:
        ci = f.get(key)
        if isinstance(ci, Sequence) and len(ci) == 2 and _finite(ci[0]) and _finite(ci[1]):
            return float(ci[0]), float(ci[1])
    return None


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}×" if x < 2 else f"{x:.1f}×" if x < 20 else f"{x:,.0f}×"


def fmt_ms(x: float, signed: bool = True) -> str:
    digits = 1 if abs(x) < 10 else 0
    return (f"{x:+,.{digits}f}" if signed else f"{x:,.{digits}f}").replace("-", "−") + " ms"


def declared_of(summary: Mapping[str, Any], scenario: str) -> Mapping[str, Any]:
    """The scenario's catalogue metadata as the run recorded it, else as the current catalogue has it."""
    entry = (summary.get("scenarios") or {}).get(scenario) or {}
    declared = entry.get("declared") if isinstance(entry, Mapping) else None
    if declared:
        return declared
    from ...catalogue import default_catalogue

    return default_catalogue().declared(scenario) or {}


def family_of(summary: Mapping[str, Any], scenario: str) -> str:
    return str(declared_of(summary, scenario).get("family") or "other")


def context_of(summary: Mapping[str, Any], scenario: str) -> str:
    """What kind of function and backend a scenario is, in a few words."""
    d = declared_of(summary, scenario)
    if not d:
        return "–"
    tls, pg = d.get("transport") == "tls", d.get("backend") == "pg"
    base = "PostgreSQL over TLS" if tls and pg else "TLS" if tls else "PostgreSQL" if pg else "TCP"
    parts = [base]
    language = str(d.get("language") or "python")
    if language != "python":
        parts[0] = f"{_LANGUAGES.get(language, language)} · {base}"
    if d.get("proxy"):
        parts.append("PgBouncer" + (" (Unix)" if "unix" in str(d["proxy"]) else ""))
    if d.get("handoff") == "relay":
        parts.append("relay")
    if d.get("entrypoint") == "fd3" and language == "python":
        parts.append("fd 3")
    if d.get("network") == "none":
        parts.append("no network")
    if _finite(d.get("delay_ms")) and d["delay_ms"]:
        parts.append(f"{d['delay_ms']:g} ms delay")
    if _finite(d.get("rtt_ms")) and d["rtt_ms"]:
        parts.append(f"{d['rtt_ms']:g} ms RTT")
    if int(d.get("burst") or 1) > 1 or d.get("family") == "burst":
        parts.append(f"{int(d.get('burst') or 1)} at once")
    runtime = d.get("runtime")
    if runtime and runtime != "runc":
        parts.append(f"on {runtime}")
    return " · ".join(parts)


def _roles(f: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, reference) of a finding: the arm asked about and the one it is measured against."""
    names = [str(n) for n in f.get("scenarios") or []]
    kind = f.get("kind")
    if not names:
        return "", ""
    if kind == "burst_scaling":  # named as the curve runs: alone first
        return names[-1], names[0]
    if kind == "delay_slope":
        return names[0], ""
    if kind == "control" or f.get("role") == "control":
        return names[0], names[1] if len(names) > 1 else ""
    return (names[1], names[0]) if len(names) > 1 else (names[0], "")


def _rules_out_ratio(ci: tuple[float, float] | None, what: str) -> str:
    if ci is None:
        return "nothing (no interval at this sample size)"
    lo, hi = ci
    parts = []
    if lo > 1:
        parts.append(f"{what} under {fmt_ratio(lo)}")
    elif lo > 0 and lo < 1:
        parts.append(f"a slow-down beyond {fmt_ratio(1 / lo)}")
    parts.append(f"{what} over {fmt_ratio(hi)}" if hi >= 1 else f"a slow-down under {fmt_ratio(1 / hi)}")
    return "; ".join(parts)


def _rules_out_diff(ci: tuple[float, float] | None) -> str:
    if ci is None:
        return "nothing (no interval at this sample size)"
    lo, hi = ci  # subject − reference
    if hi < 0:
        return f"a saving under {fmt_ms(-hi, False)} or over {fmt_ms(-lo, False)}"
    if lo > 0:
        return f"a saving; a cost under {fmt_ms(lo, False)} or over {fmt_ms(hi, False)}"
    return f"a saving over {fmt_ms(-lo, False)}; a cost over {fmt_ms(hi, False)}"


def not_injection_alone(f: Mapping[str, Any]) -> str:
    """A pair label's note when its arms differ in more than the connection method: such an
    answer is the effect of that factor (e.g. dropping the network namespace, which injection
    allows) or of a whole stack, never headlined as injection's."""
    factors = [str(x) for x in f.get("differs_in") or []]
    if not factors:
        return ""
    what = "stack comparison" if f.get("comparison_kind") == "stack" else "effect of"
    return f" [{what}: {', '.join(factors)}]"


def answer_of(f: Mapping[str, Any], summary: Mapping[str, Any]) -> Answer:
    kind = str(f.get("kind") or f.get("topic") or "")
    subject, reference = _roles(f)
    sig = f.get("significant")
    significant = bool(sig) if isinstance(sig, bool) else None
    unit = str(f.get("unit") or "")
    est = f.get("estimate")
    estimate = float(est) if isinstance(est, int | float) and _finite(est) else None
    control = kind == "control" or f.get("role") == "control"
    question = QUESTIONS.get("control" if control else kind, kind.replace("_", " ") + "?")
    ci: tuple[float, float] | None
    if unit == "x":
        ci = _interval(f, ratio=True)
        effect = fmt_ratio(estimate) if estimate is not None else "–"
        what = "a speed-up" if kind == "connect_speedup" else "a ratio"
        rules = _rules_out_ratio(ci, what)
        direction = estimate is not None and estimate > 1
    elif unit == "ms":
        ci = _interval(f, ratio=False)
        flip = not control  # findings state reference − subject (a saving); shown as subject − reference
        if flip and estimate is not None:
            estimate = -estimate
        if flip and ci is not None:
            ci = (-ci[1], -ci[0])
        effect = fmt_ms(estimate) if estimate is not None else "–"
        rules = _rules_out_diff(ci)
        direction = estimate is not None and estimate < 0
    else:
        ci = _interval(f, ratio=False)
        effect = f"{estimate:.3g} {unit}".strip() if estimate is not None else "–"
        if kind == "predictability" and estimate is not None:
            effect = f"variance ratio {estimate:.2f}"
        rules = f"a value outside {ci[0]:.3g} to {ci[1]:.3g} {unit}".strip() if ci else "–"
        direction = estimate is not None and estimate > (1 if unit in ("ratio", "x") else 0)
    if ci is None:
        interval = "–"
    elif unit == "x":
        interval = f"{fmt_ratio(ci[0])} – {fmt_ratio(ci[1])}"
    elif unit == "ms":
        interval = f"{fmt_ms(ci[0]).removesuffix(' ms')} to {fmt_ms(ci[1])}"
    else:
        interval = f"{ci[0]:.3g} to {ci[1]:.3g} {unit}".strip()
    interval = interval.replace(" ", "\u00a0")  # one interval never wraps inside a table cell
    if significant is None:
        verdict = "–"
    elif control:
        verdict = "FAILED" if significant else "passed"
    elif not significant:
        verdict = "n.d."
    else:
        verdict = "yes" if direction else "no"
    if control:
        rules = "—" if significant is None else "a false positive at this level" if not significant else "nothing"
    pair = f"{subject} vs {reference}" if reference else f"{', '.join(map(str, f.get('scenarios') or []))}"
    pair += not_injection_alone(f)
    family = family_of(summary, subject) if subject else "other"
    if kind == "delay_slope":
        context = "TCP · delay"
    elif kind == "burst_scaling":
        context = "TCP · bursts"
    else:
        context = context_of(summary, subject) if subject else "–"
    return Answer(
        question=question,
        context=context,
        pair=pair,
        effect=effect,
        interval=interval,
        verdict=verdict,
        rules_out=rules,
        family=family,
        kind=kind,
        subject=subject,
        reference=reference,
        significant=significant,
        estimate=estimate,
        ci=ci,
        unit=unit,
        finding=f,
    )


def family_order(names: Sequence[str]) -> list[str]:
    known = [f for f in FAMILY_TITLES if f in names]
    return known + sorted(n for n in set(names) if n not in FAMILY_TITLES)


def family_title(name: str) -> str:
    return FAMILY_TITLES.get(name, f"Family: {name}")


def answers(summary: Mapping[str, Any]) -> list[Answer]:
    """Every finding of the run as an answer, in family order (then as the findings come)."""
    found = [answer_of(f, summary) for f in summary.get("findings") or [] if isinstance(f, Mapping)]
    order = {name: i for i, name in enumerate(family_order([a.family for a in found]))}
    return sorted(found, key=lambda a: order[a.family])


def confidence_text(summary: Mapping[str, Any]) -> str:
    family = summary.get("family") or {}
    level = family.get("confidence_adjusted")
    size = family.get("size")
    if isinstance(level, int | float) and _finite(level) and size:
        return f"family-wise {level * 100:.4g} % intervals (alpha {family.get('alpha', 0.05)} over {size} answers)"
    return "intervals as each finding states"
