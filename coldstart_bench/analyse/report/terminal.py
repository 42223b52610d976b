"""The end-of-run terminal summary: a table per scenario, then verdicts, warnings and gate lines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...results import RunAnalysis


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


def render(analysis: RunAnalysis) -> list[str]:
    summary = analysis.summary
    lines = finding_lines(summary) + table_lines(summary.get("scenarios", {}))
    lines += stopping_line(summary)
    if analysis.verdicts:
        policy = analysis.expectation_policy
        lines += ["", f"expectations (policy: {policy}):"] + [v.line() for v in analysis.verdicts]
    groups = summary.get("warning_groups")
    warnings = [g["line"] for g in groups] if groups else analysis.warnings
    if warnings:
        lines += [""] + [f"WARNING: {w}" for w in warnings]
    if analysis.gate_results:
        lines += [""] + [g.line() for g in analysis.gate_results]
    return lines
