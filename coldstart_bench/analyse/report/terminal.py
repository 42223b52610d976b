"""The end-of-run terminal summary: a table per scenario, then verdicts, warnings and gate lines."""

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


def render(analysis: RunAnalysis) -> list[str]:
    return render_result(analysis.result, analysis.expectation_policy)


def render_result(result: RunResult, expectation_policy: str | None = None) -> list[str]:
    """The summary from the result alone (as summary.json holds it): `coldstart-bench show` prints
    what the end of the run printed. Findings come first, then the raw table."""
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
