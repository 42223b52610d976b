"""Report sections about how far the run's answers can be trusted: the family-wise findings, the A/A
false-positive check, the lower-variance estimator, sample-size planning and the stopping rule.
Built from summary.json content only (re-rendering a saved run needs no samples)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..familywise import order_findings
from .blocks import Bullets, Heading, Image, Para, Table, num

Block = Heading | Para | Bullets | Table | Image


def _mark(f: Mapping[str, Any]) -> str:
    if "significant" not in f:
        return ""
    return "**significant** — " if f["significant"] else "not distinguishable — "


def finding_lines(findings: Sequence[Mapping[str, Any]]) -> list[str]:
    """Significant findings first, each marked."""
    return [_mark(f) + str(f["text"]) for f in order_findings(findings)]


def family_para(family: Mapping[str, Any]) -> Para | None:
    if not family:
        return None
    k, alpha = family.get("size"), family.get("alpha")
    level = family.get("confidence_adjusted")
    level_text = f"{level:.2%}".replace(".00%", "%") if isinstance(level, float) else "–"
    return Para(
        f"The {k} findings are judged as one family at alpha = {alpha}: every interval is at the Bonferroni level "
        f"{level_text} (1 − alpha/{k}), p-values are Holm-adjusted over the family, and a finding counts as "
        f"significant only when its family-wise interval excludes no difference; {family.get('significant', 0)} of "
        f"{k} are. A finding that is not distinguishable states no saving."
    )


def control_blocks(findings: Sequence[Mapping[str, Any]]) -> list[Block]:
    aa = [f for f in findings if f.get("kind") == "control"]
    out: list[Block] = [Heading("False-positive check (A/A control)")]
    if not aa:
        out.append(Para("No A/A control ran (the catalogue's control family was not selected)."))
        return out
    out.append(
        Para(
            "Two identical scenarios compared like every other pair: at the family-wise level they must come out "
            "not distinguishable. If they do not, the machine was not stable enough to trust the other findings."
        )
    )
    out.append(Bullets([_mark(f) + str(f["text"]) for f in aa]))
    return out


def effects_blocks(effects: Mapping[str, Any]) -> list[Block]:
    if not effects:
        return []
    out: list[Block] = [Heading("Lower-variance estimator: start→die next to the lifecycle")]
    out.append(Para(f"Why: {effects.get('why', '')}."))
    texts = [t["text"] for t in effects.get("side_by_side", [])]
    if texts:
        out.append(Bullets(texts))
    checks = effects.get("engine_phases", [])
    lines = []
    for c in checks:
        if c.get("sentence"):
            lines.append(str(c["sentence"]))
            continue
        tests = c.get("tests", [])
        if tests:
            parts = ", ".join(
                f"{t['phase']} {num(t['median_a'], 1)} vs {num(t['median_b'], 1)} ms "
                f"(Holm-adjusted p = {num(t['p_adjusted'], 2)})"
                for t in tests
            )
            lines.append(
                f"Engine phases of {c['a']} and {c['b']} do not differ at this sample size: {parts} "
                "(not rejecting is no proof of equality)."
            )
        for note in c.get("notes", []):
            lines.append(f"{c['a']} vs {c['b']}: {note}")
    if lines:
        out.append(Bullets(lines))
    return out


def planning_blocks(plans: Sequence[Mapping[str, Any]]) -> list[Block]:
    if not plans:
        return []
    return [
        Heading("Sample-size planning"),
        Para(
            "From this run's own spread: how many cold starts per arm would resolve a difference as large as the "
            "connection-time saving, at 80 % power and the family-wise alpha."
        ),
        Bullets([f"{' vs '.join(p.get('scenarios', []))}: {p['sentence']}" for p in plans]),
    ]


def stopping_blocks(stopping: Mapping[str, Any] | None) -> list[Block]:
    if not stopping:
        return []
    rule = stopping.get("rule", {})
    what = []
    if rule.get("precision"):
        relative = " of the reference median" if rule.get("precision_relative") else ""
        what.append(f"precision {rule['precision']}{relative}")
    if rule.get("max_time_s"):
        what.append(f"time budget {num(rule['max_time_s'], 0)} s")
    if rule.get("max_cold_starts"):
        what.append(f"cold-start budget {rule['max_cold_starts']}")
    reason = stopping.get("stop_reason") or "the plan ended before the rule stopped it"
    out: list[Block] = [
        Heading("Stopping rule"),
        Para(
            f"Rule: {', '.join(what)}; {rule.get('method', '')}, alpha {rule.get('alpha')} over the headline "
            f"comparisons. Stopped: {reason} after {stopping.get('looks')} looks, {stopping.get('cold_starts')} "
            f"measured cold starts, {num(stopping.get('elapsed_s'), 0)} s. Reached the precision: "
            f"{', '.join(stopping.get('reached') or []) or 'none'}."
        ),
    ]
    rows = []
    for name, c in (stopping.get("comparisons") or {}).items():
        interval = c.get("interval")
        rows.append(
            [
                name,
                str(c.get("blocks")),
                num(c.get("estimate"), 2),
                f"[{num(interval[0], 2)}, {num(interval[1], 2)}]" if interval else "–",
                num(c.get("half_width"), 2),
                num(c.get("target"), 2),
                "yes" if c.get("reached") else "no",
            ]
        )
    if rows:
        out.append(
            Table(
                ["comparison", "blocks", "mean per-block diff", "sequence interval", "half-width", "target", "reached"],
                rows,
                "Per-block differences of medians; the confidence sequence stays valid although the run chose "
                "its length by looking at it. Headline findings above use it (at their share of the family).",
            )
        )
    return out


def warning_lines(summary: Mapping[str, Any]) -> list[str]:
    """One line per rule when the run recorded groups (version 3), else the warnings as they are."""
    groups = summary.get("warning_groups")
    if groups:
        return [str(g["line"]) for g in groups]
    return [str(w) for w in summary.get("warnings", [])]


def shift_cell(c: Mapping[str, Any]) -> str:
    ci = c.get("shift_ci_adjusted")
    level = c.get("confidence_adjusted")
    if c.get("shift") is None or not isinstance(level, float) or not math.isfinite(level):
        return "–"
    interval = f"[{num(ci[0], 1)}, {num(ci[1], 1)}]" if ci else "[–]"
    return f"{num(c['shift'], 1)} {interval}"
