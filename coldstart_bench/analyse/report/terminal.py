"""The end-of-run terminal summary.

By default a short one (at most MAX_LINES lines): the answers, one line per compared pair, then
the gate, the expectations and the warnings grouped per rule, and where the report is. With
``-v`` the long form: every finding as a sentence, the table per scenario, harness time, every
expectation, warning and gate line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...results import RunResult
    from ..analysis import RunAnalysis


def _n(x: Any, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table_lines(scenarios: dict[str, Any]) -> list[str]:
    if not scenarios:
        return ["no samples"]
    width = max(8, *(len(n) for n in scenarios))
    head = (
        f"{'scenario':<{width}} {'n':>5} {'failed':>6} | {'connect_us median':>17} {'p95':>9} {'p99':>9} | "
        f"{'lifecycle_ms median':>19} {'p95':>8} {'p99':>8}"
    )
    lines = [head, "-" * len(head)]
    for name, e in scenarios.items():
        c, lc = e["connect_us"], e["lifecycle_ms"]
        lines.append(
            f"{name:<{width}} {e['ok']:>5} {e['failed']:>6} | {_n(c['median'], 1):>17} {_n(c['p95'], 1):>9} "
            f"{_n(c['p99'], 1):>9} | {_n(lc['median'], 1):>19} {_n(lc['p95'], 1):>8} {_n(lc['p99'], 1):>8}"
        )
    return lines


def finding_lines(summary: dict[str, Any]) -> list[str]:
    """Findings first (significant ones first), so the verdict comes before the raw numbers."""
    from ..familywise import order_findings

    findings = summary.get("findings", [])
    if not findings:
        return []
    family = summary.get("family") or {}
    head = "findings"
    if family:
        judged = f"{family.get('significant', 0)} of {family.get('size')} significant"
        head += f" ({judged} at family-wise alpha {family.get('alpha')}):"
    lines = [head]
    for f in order_findings(findings):
        mark = "" if "significant" not in f else ("[significant] " if f["significant"] else "[not distinguishable] ")
        lines.append(f"  {mark}{f['text']}")
    return [*lines, ""]


def stopping_line(summary: dict[str, Any]) -> list[str]:
    stopping = summary.get("stopping")
    if not stopping:
        return []
    reached = ", ".join(stopping.get("reached") or []) or "none"
    return [
        "",
        f"stopping rule: {stopping.get('stop_reason') or 'not stopped (the plan ended)'} after "
        f"{stopping.get('cold_starts')} measured cold starts; precision reached by: {reached}",
    ]


def harness_time_lines(spent: dict[str, Any]) -> list[str]:
    """The wall/lifecycle ratio of the run and the switches that perturbed the next cold start."""
    ratio = spent.get("wall_lifecycle_ratio")
    if ratio is None:
        return []
    lines = [
        f"wall/lifecycle: {ratio:.2f}x ({spent['wall_s']:.1f} s of executor wall time for "
        f"{spent['measured_lifecycle_s']:.1f} s of measured lifecycles; warm-ups {spent['warmup_lifecycle_s']:.1f} s "
        f"in {spent['warmup_starts']} starts, testbed switches {spent['prepare_s']:.1f} s, "
        f"harness {spent['harness_s']:.1f} s)"
    ]
    by_switch = spent.get("prepare_by_switch") or {}
    if by_switch:
        costly = [f"{kind} {e['s']:.1f} s / {e['blocks']}" for kind, e in list(by_switch.items())[:5]]
        lines.append("testbed switches by what opened the block (s / blocks): " + ", ".join(costly))
    evidence = spent.get("warmup_evidence") or {}
    if evidence:
        parts = [
            f"{kind} {e['median_excess_ms']:+.1f} ms over {e['blocks']} blocks"
            + (" (perturbs)" if e.get("perturbs") else "")
            for kind, e in evidence.items()
        ]
        lines.append("first cold start of a block vs later ones: " + "; ".join(parts))
    return lines


def render(analysis: RunAnalysis, *, verbose: bool = False, report_path: str = "") -> list[str]:
    if verbose:
        return render_result(analysis.result, analysis.expectation_policy)
    return render_short(analysis.result, report_path=report_path)


def render_result(result: RunResult, expectation_policy: str | None = None) -> list[str]:
    """The long form from the result alone (as summary.json holds it): `coldstart-bench show -v`
    prints what the end of a `-v` run printed. Findings come first, then the raw table."""
    summary = result.to_dict()
    lines = finding_lines(summary) + table_lines(summary.get("scenarios", {}))
    lines += harness_time_lines(summary.get("harness_time") or {})
    lines += stopping_line(summary)
    if result.verdicts:
        policy = expectation_policy or result.analysis.get("expectation_policy", "report")
        lines += ["", f"expectations (policy: {policy}):"] + [str(v.get("line", "")) for v in result.verdicts]
    groups = summary.get("warning_groups")
    warnings = [g["line"] for g in groups] if groups else list(result.warnings)
    if warnings:
        lines += [""] + [f"WARNING: {w}" for w in warnings]
    if result.gate:
        lines += [""] + [str(g.get("line", "")) for g in result.gate]
    return lines


# --- the short form ---------------------------------------------------------------------------

MAX_LINES = 38  # the whole short summary, first line to last
MAIN_QUESTIONS: tuple[str, ...] = ("connect_speedup", "run_phase_saving", "lifecycle_saving")
_COLUMN_TITLES = {
    "connect_speedup": "connection faster?",
    "run_phase_saving": "function finishes sooner?",
    "lifecycle_saving": "cold start shorter?",
}
_WIDTH = 150  # longest line: wider ones are cut with "…"


def _cut(line: str, width: int = _WIDTH) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def _cell(a: Any) -> str:
    """One answer as 'verdict effect [interval]', compactly."""
    from .answers import fmt_ratio

    if a is None:
        return ""
    if a.ci is None:
        return f"{a.verdict} {a.effect}"
    if a.unit == "x":
        return f"{a.verdict} {a.effect} [{fmt_ratio(a.ci[0])}, {fmt_ratio(a.ci[1])}]"
    if a.unit == "ms":
        low = min(a.ci, key=abs)
        digits = 1 if abs(low) < 10 else 0  # never "-0"; as many digits as the smaller bound needs

        def ms(x: float) -> str:
            return f"{x:+.{digits}f}"

        return f"{a.verdict} {ms(a.estimate)} [{ms(a.ci[0])}, {ms(a.ci[1])}] ms"
    return f"{a.verdict} {a.effect} [{a.ci[0]:.3g}, {a.ci[1]:.3g}]"


def answer_lines(summary: dict[str, Any], budget: int) -> list[str]:
    """The answers as a table of compared pairs (rows) by question (columns), at most `budget`
    lines; pairs left out for room are counted on the last line (significant ones kept first)."""
    from .answers import answers, confidence_text, not_injection_alone

    found = answers(summary)
    if not found:
        return ["answers: none (the run lacks the scenario pairs they compare, e.g. socket and direct)"]
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    others = []
    for a in found:
        if a.kind in MAIN_QUESTIONS and a.reference:
            pairs.setdefault((a.subject, a.reference), {})[a.kind] = a
        else:
            others.append(a)
    head = [
        f"answers ({confidence_text(summary)}; speed-up = reference ÷ arm; "
        "ms = arm − reference; n.d. = not distinguishable):",
    ]
    notes = {
        k: next((n for a in row.values() if (n := not_injection_alone(a.finding))), "") for k, row in pairs.items()
    }
    labels = {k: f"{k[0]} vs {k[1]}{notes[k]}" for k in pairs}
    width = max([len(v) for v in labels.values()] + [4]) + 2
    cols = [q for q in MAIN_QUESTIONS if any(q in row for row in pairs.values())]
    rows = []
    for key, row in pairs.items():
        cells = "".join(f"{_cell(row.get(q)):<30}" for q in cols)
        rows.append((any(a.significant for a in row.values()), f"  {labels[key]:<{width}}{cells}".rstrip()))
    extra = [
        f"{a.question} {a.pair if a.kind != 'delay_slope' else 'delay slope'}: {_cell(a)}"
        for a in others
        if a.kind != "predictability" or a.significant
    ]
    extra_lines = ["  " + e for e in extra]
    room = budget - len(head) - 1 - len(extra_lines)
    if rows:
        head.append(f"  {'pair':<{width}}" + "".join(f"{_COLUMN_TITLES[q]:<30}" for q in cols).rstrip())
    if len(rows) > room:
        keep = [r for r in rows if r[0]][: max(room - 1, 0)]
        keep += [r for r in rows if not r[0]][: max(room - 1 - len(keep), 0)]
        kept = {id(r) for r in keep}
        left = [r for r in rows if id(r) not in kept]
        shown = [r[1] for r in rows if id(r) in kept]
        shown.append(
            f"  … {len(left)} more pairs ({sum(1 for r in left if r[0])} with a significant answer): report.md, or -v"
        )
    else:
        shown = [r[1] for r in rows]
    return [*head, *(_cut(s) for s in shown), *(_cut(e) for e in extra_lines)]


def gate_line(result: RunResult, most: int = 6) -> list[str]:
    """'GATE OK (n rules)' when every rule holds, else each failing rule's own GATE FAIL line."""
    if not result.gate:
        return ["gate: no rules and no baseline"]
    lines = [str(g.get("line", "")) for g in result.gate]
    failed = [line for line in lines if line.startswith("GATE FAIL")]
    if not failed:
        return [f"GATE OK ({len(lines)} rules hold; -v lists them)"]
    shown = [_cut(f) for f in failed[:most]]
    more = [f"GATE FAIL … {len(failed) - most} more failing rules: -v"] if len(failed) > most else []
    return [f"gate: FAILED ({len(failed)} of {len(lines)} rules)", *shown, *more]


def expectation_line(result: RunResult) -> list[str]:
    if not result.verdicts:
        return []
    counts: dict[str, int] = {}
    for v in result.verdicts:
        counts[str(v.get("status", "?"))] = counts.get(str(v.get("status", "?")), 0) + 1
    worse = [str(v.get("expectation", "")) for v in result.verdicts if v.get("status") == "significantly_worse"]
    text = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items())
    return [_cut(f"expectations: {text}" + (f" — worse: {'; '.join(worse)}" if worse else ""))]


def warning_block(summary: dict[str, Any], budget: int) -> list[str]:
    groups = summary.get("warning_groups")
    lines = [str(g.get("line", "")) for g in groups] if groups else list(summary.get("warnings") or [])
    if not lines:
        return ["warnings: none"]
    # The header, the rules, and a last line counting those left out: `budget` lines in all.
    shown = lines if len(lines) + 1 <= budget else lines[: max(budget - 2, 1)]
    out = [f"warnings ({len(lines)} rules; each names every scenario it fired for in the report):"]
    out += [_cut("  " + w, 130) for w in shown]
    if len(lines) > len(shown):
        out.append(f"  … {len(lines) - len(shown)} more: report.md")
    return out


def render_short(result: RunResult, *, report_path: str = "") -> list[str]:
    """At most MAX_LINES lines: the first names the run, the last says where the report is."""
    summary = result.to_dict()
    scenarios = summary.get("scenarios") or {}
    cold = sum(int(e.get("n", 0)) for e in scenarios.values())
    failed = sum(int(e.get("failed", 0)) for e in scenarios.values())
    first = f"[coldstart-bench] {len(scenarios)} scenarios, {cold} measured cold starts ({failed} failed)"
    tail = [
        f"report: {report_path}" if report_path else "report: not written",
        "(-v for every finding, the table per scenario and every warning)",
    ]
    gate = gate_line(result)
    expect = expectation_line(result)
    stop = stopping_line(summary)[1:]
    warn_budget = 5
    answer_budget = MAX_LINES - 1 - len(gate) - len(expect) - len(stop) - (warn_budget + 1) - len(tail)
    lines = [first, *answer_lines(summary, answer_budget), *stop, *gate, *expect]
    lines += warning_block(summary, MAX_LINES - len(lines) - len(tail))
    return (lines + tail)[:MAX_LINES] if len(lines) + len(tail) > MAX_LINES else lines + tail
