from __future__ import annotations

import pytest

from coldstart_bench.analyse.warning_groups import RunWarning, group_warnings, grouped_lines

DRIFT = "drift: first and second half of the scenario differ (Mann–Whitney p < 0.01)"


def _drift(scenario: str, metric: str = "lifecycle_ms") -> dict[str, str]:
    return {"rule": "drift", "scenario": scenario, "text": f"{scenario} {metric}: drift — median 463 vs 410"}


def test_one_line_per_rule_naming_the_scenarios_in_order() -> None:
    warnings = [
        _drift("socket"),
        {"rule": "failed", "scenario": "fallback", "text": "fallback: 2 of 10 cold starts failed"},
        _drift("direct"),
        _drift("socket", "connect_us"),
        _drift("fallback"),
    ]
    lines = grouped_lines(warnings)
    assert lines == [
        f"{DRIFT}: 3 scenarios — socket, direct, fallback (e.g. socket lifecycle_ms: drift — median 463 vs 410)",
        "fallback: 2 of 10 cold starts failed",
    ]
    groups = group_warnings(warnings)
    assert groups[0].to_dict()["count"] == 4 and groups[0].scenarios == ["socket", "direct", "fallback"]


def test_run_wide_and_unknown_rules() -> None:
    warnings = [
        RunWarning("cpu_contention", "CPU contention: load 3.1 at the start"),
        RunWarning("cpu_contention", "CPU contention: load 2.5 at the end"),
        RunWarning("new-rule", "x: odd", "x"),
        RunWarning("new-rule", "x: odder", "x"),
    ]
    lines = grouped_lines(warnings)
    assert lines[0].startswith("CPU contention (load above the CPU count, or steal above 5 %): 2 times (e.g. ")
    assert lines[1] == "new-rule: 1 scenario — x (e.g. x: odd)"
    assert grouped_lines(warnings, {"new-rule": "odd things"})[1].startswith("odd things: 1 scenario")


def test_malformed_warning_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs 'rule' and 'text'"):
        grouped_lines([{"scenario": "x", "text": "no rule"}])
    assert grouped_lines([]) == []
