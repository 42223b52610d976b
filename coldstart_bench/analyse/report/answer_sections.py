"""The front of the report: the answers, the gate and warnings, and one section per scenario
family (a compact table of its scenarios, its forest plot, its distributions). Also the rules every
table of the report follows: percentiles only where n supports them, at most MAX_COLUMNS columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..stats import MIN_N_FOR_PERCENTILE
from .answers import VERDICT_NOTE, Answer, answers, confidence_text, family_title
from .blocks import Bullets, Heading, Image, Para, Table, num
from .family_plots import distribution_file, family_members, forest_file

Block = Heading | Para | Bullets | Table | Image
MAX_COLUMNS = 10
PERCENTILE_FOOTNOTE = "–¹"

SPEEDUP_DEFINITION = (
    "**Speed-up** (the one number per pair): reference ÷ arm connection time (Hodges–Lehmann on log values). "
    "**ms**: arm − reference (negative: the arm is shorter). **Rules out**: what lies outside the interval. "
)


def percentile(entry: Mapping[str, Any] | None, stat: str, digits: int) -> str:
    """A percentile of a metric, or '–¹' when the sample is too small for it (the footnote says why)."""
    if not entry or entry.get(stat) is None:
        return "–"
    need = MIN_N_FOR_PERCENTILE.get(stat, 0)
    if int(entry.get("n") or 0) < need:
        return PERCENTILE_FOOTNOTE
    return num(entry[stat], digits)


def percentile_note() -> str:
    rules = ", ".join(f"{stat} needs ≥ {n}" for stat, n in MIN_N_FOR_PERCENTILE.items())
    return f"¹ not shown: too few successful cold starts for this percentile ({rules})."


def answers_table(found: Sequence[Answer], with_family: bool = True) -> Table:
    headers = ["question", "for", "pair", "effect", "family-wise interval", "verdict", "rules out"]
    rows = [[a.question, a.context, a.pair, a.effect, a.interval, f"**{a.verdict}**", a.rules_out] for a in found]
    if not with_family:
        headers, rows = headers[:1] + headers[2:], [r[:1] + r[2:] for r in rows]
    return Table(headers, rows)


def answers_blocks(summary: Mapping[str, Any]) -> list[Block]:
    found = answers(summary)
    out: list[Block] = [Heading("Answers")]
    if not found:
        out.append(Para("No answers: the run lacks the scenario pairs they compare (e.g. socket and direct)."))
        return out
    yes = sum(1 for a in found if a.verdict == "yes")
    out.append(
        Para(
            f"{len(found)} questions this run can answer, {yes} answered yes; {confidence_text(summary)}. "
            + SPEEDUP_DEFINITION
            + f"Verdict — {VERDICT_NOTE}."
        )
    )
    out.append(answers_table(found))
    return out


def gate_blocks(summary: Mapping[str, Any]) -> list[Block]:
    out: list[Block] = [Heading("Gate and warnings")]
    gate = summary.get("gate") or []
    out.append(Bullets([str(g.get("line", "")) for g in gate]) if gate else Para("Gate: no rules and no baseline."))
    verdicts = summary.get("verdicts") or []
    if verdicts:
        counts: dict[str, int] = {}
        for v in verdicts:
            counts[str(v.get("status"))] = counts.get(str(v.get("status")), 0) + 1
        text = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items())
        out.append(Para(f"Expectations (the thesis's claims): {text}; the table is in the appendix."))
    groups = summary.get("warning_groups")
    warnings = [str(g.get("line", "")) for g in groups] if groups else list(summary.get("warnings") or [])
    out.append(Bullets(warnings) if warnings else Para("Warnings: none."))
    return out


def scenario_table(summary: Mapping[str, Any], names: Sequence[str]) -> Table:
    """The family's scenarios as rows: n, connection and lifecycle medians, p95 where n allows."""
    scenarios = summary.get("scenarios") or {}
    rows = []
    for name in names:
        e = scenarios.get(name) or {}
        conn, life, run = e.get("connect_us") or {}, e.get("lifecycle_ms") or {}, e.get("start_to_die_ms") or {}
        ci = life.get("ci_median")
        life_ci = f" [{num(ci[0], 0)}–{num(ci[1], 0)}]" if ci and ci[0] is not None and ci[1] is not None else ""
        rows.append(
            [
                f"`{name}`",
                f"{e.get('ok', '–')}" + (f" ({e['failed']} failed)" if e.get("failed") else ""),
                num(conn.get("median"), 0),
                percentile(conn, "p95", 0),
                num(life.get("median"), 0) + life_ci,
                percentile(life, "p95", 0),
                num(run.get("median"), 0),
            ]
        )
    return Table(
        [
            "scenario",
            "n",
            "connect µs median",
            "connect µs p95",
            "lifecycle ms median [95% CI]",
            "lifecycle ms p95",
            "start→die ms median",
        ],
        rows,
    )


def family_blocks(
    summary: Mapping[str, Any], plot_files: Sequence[str], extras: Mapping[str, list[Block]] | None = None
) -> list[Block]:
    """One section per family: its scenarios, its answers' forest plot, its distributions, and
    what else the report knows about that family (`extras`, e.g. the delay fit or the TLS table)."""
    found = answers(summary)
    out: list[Block] = []
    used_footnote = False
    for family, names in family_members(summary).items():
        out.append(Heading(family_title(family)))
        table = scenario_table(summary, names)
        used_footnote = any(PERCENTILE_FOOTNOTE in c for r in table.rows for c in r)
        if used_footnote:
            table.caption = percentile_note()
        out.append(table)
        mine = [a for a in found if a.family == family]
        if mine:
            out.append(
                Bullets(
                    [
                        f"{a.question} `{a.pair}`: **{a.verdict}** {a.effect} ({a.interval}); rules out {a.rules_out}"
                        for a in mine
                    ]
                )
            )
        if forest_file(family) in plot_files:
            out.append(Image(forest_file(family), f"{family_title(family)}: effects with family-wise intervals"))
        if distribution_file(family) in plot_files:
            out.append(Image(distribution_file(family), f"{family_title(family)}: connection time and lifecycle"))
        out.extend((extras or {}).get(family, []))
    return out


def split_wide(table: Table, max_columns: int = MAX_COLUMNS) -> list[Table]:
    """A table wider than max_columns as several, each repeating the first column."""
    if len(table.headers) <= max_columns:
        return [table]
    out = []
    rest = list(range(1, len(table.headers)))
    step = max_columns - 1
    for start in range(0, len(rest), step):
        cols = [0, *rest[start : start + step]]
        last = start + step >= len(rest)
        out.append(
            Table(
                [table.headers[c] for c in cols],
                [[row[c] if c < len(row) else "" for c in cols] for row in table.rows],
                table.caption if last else "",
            )
        )
    return out


def narrow_tables(blocks: Sequence[Block], max_columns: int = MAX_COLUMNS) -> list[Block]:
    out: list[Block] = []
    for b in blocks:
        out.extend(split_wide(b, max_columns) if isinstance(b, Table) else [b])
    return out
