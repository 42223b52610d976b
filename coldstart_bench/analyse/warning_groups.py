"""Warnings grouped per rule: one line naming every scenario a rule fired for, not one line each.

A warning is {rule, scenario, text}: `rule` a short id (see RULE_SUMMARIES for the ones the noise
checks raise), `scenario` the scenario it is about (None for the run as a whole), `text` the full
sentence with its figures. A rule that fired once keeps its full text; a rule that fired for several
scenarios becomes "<summary>: <n> scenarios — a, b, c (e.g. <first text>)", in the order the rules
first fired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# One-line statements of the rules noise.py applies, for the grouped line.
RULE_SUMMARIES: dict[str, str] = {
    "failed": "failed cold starts excluded from the statistics",
    "unstable": "unstable: stdev above the limit of the mean (10 % lifecycle, 50 % connect)",
    "extreme_outliers": "extreme outliers beyond 3×IQR from the quartiles",
    "drift": "drift: first and second half of the scenario differ (Mann–Whitney p < 0.01)",
    "disturbed_block": "disturbed block: one block's median lifecycle >= 1.5× the scenario's other blocks",
    "percentile_n": "too few samples for the percentile (p95 needs >= 20, p99 >= 100)",
    "cpu_contention": "CPU contention (load above the CPU count, or steal above 5 %)",
    "aa_significant": "the A/A control came out significant: the machine is not stable enough for the findings",
}


@dataclass(frozen=True)
class RunWarning:
    rule: str
    text: str
    scenario: str | None = None

    @classmethod
    def from_mapping(cls, item: Mapping[str, Any]) -> RunWarning:
        try:
            rule, text = str(item["rule"]), str(item["text"])
        except KeyError as exc:
            raise ValueError(f"a warning needs 'rule' and 'text', got keys {sorted(item)}") from exc
        scenario = item.get("scenario")
        return cls(rule, text, None if scenario is None else str(scenario))


@dataclass
class WarningGroup:
    rule: str
    scenarios: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def line(self, summaries: Mapping[str, str] = RULE_SUMMARIES) -> str:
        if len(self.texts) == 1:
            return self.texts[0]
        summary = summaries.get(self.rule, self.rule)
        if not self.scenarios:
            return f"{summary}: {len(self.texts)} times (e.g. {self.texts[0]})"
        count = f"{len(self.scenarios)} scenario{'s' if len(self.scenarios) > 1 else ''}"
        return f"{summary}: {count} — {', '.join(self.scenarios)} (e.g. {self.texts[0]})"

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "scenarios": list(self.scenarios), "count": len(self.texts), "texts": self.texts}


def group_warnings(warnings: Iterable[RunWarning | Mapping[str, Any]]) -> list[WarningGroup]:
    """Groups in the order their rule first fired; each scenario named once per rule."""
    groups: dict[str, WarningGroup] = {}
    for raw in warnings:
        w = raw if isinstance(raw, RunWarning) else RunWarning.from_mapping(raw)
        group = groups.setdefault(w.rule, WarningGroup(w.rule))
        group.texts.append(w.text)
        if w.scenario is not None and w.scenario not in group.scenarios:
            group.scenarios.append(w.scenario)
    return list(groups.values())


def grouped_lines(
    warnings: Iterable[RunWarning | Mapping[str, Any]], summaries: Mapping[str, str] = RULE_SUMMARIES
) -> list[str]:
    """One line per rule (see the module docstring)."""
    return [g.line(summaries) for g in group_warnings(warnings)]
