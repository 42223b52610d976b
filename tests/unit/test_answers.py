"""The answers the report opens with: one per finding, with effect, interval, verdict and what is
ruled out, read from summary.json fields (missing ones degrade to '–')."""

from __future__ import annotations

from typing import Any

import pytest

from coldstart_bench.analyse.report.answer_sections import narrow_tables, percentile, split_wide
from coldstart_bench.analyse.report.answers import answer_of, answers, context_of
from coldstart_bench.analyse.report.blocks import Para, Table
from coldstart_bench.catalogue import default_catalogue

CATALOGUE = default_catalogue(rtts=(5.0,))


def _summary(*names: str, findings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "scenarios": {n: {"n": 10, "ok": 10, "failed": 0, "declared": CATALOGUE.declared(n)} for n in names},
        "findings": findings or [],
    }


SPEEDUP = {
    "kind": "connect_speedup",
    "scenarios": ["direct", "socket"],
    "estimate": 5.6,
    "unit": "x",
    "ci_adjusted": [5.2, 5.9],
    "significant": True,
}
SAVING = {
    "kind": "lifecycle_saving",
    "scenarios": ["direct", "socket"],
    "estimate": 13.3,  # direct − socket: a saving
    "unit": "ms",
    "ci_adjusted": [-31.6, 60.8],
    "significant": False,
}


def test_a_speedup_answer() -> None:
    a = answer_of(SPEEDUP, _summary("direct", "socket"))
    assert (a.question, a.context, a.pair, a.verdict) == ("connection faster?", "TCP", "socket vs direct", "yes")
    assert a.effect == "5.6×" and a.interval == "5.2×\u00a0–\u00a05.9×"
    assert a.rules_out == "a speed-up under 5.2×; a speed-up over 5.9×"
    assert a.family == "thesis"


def test_a_saving_is_shown_as_arm_minus_reference() -> None:
    a = answer_of(SAVING, _summary("direct", "socket"))
    assert a.estimate == pytest.approx(-13.3) and a.ci == pytest.approx((-60.8, 31.6))
    assert a.verdict == "n.d." and a.effect == "−13 ms"
    assert a.rules_out == "a saving over 60.8 ms; a cost over 31.6 ms".replace("60.8", "61").replace("31.6", "32")
    shorter = answer_of(SAVING | {"estimate": 40.0, "ci_adjusted": [20.0, 60.0], "significant": True}, _summary())
    assert shorter.verdict == "yes" and shorter.rules_out == "a saving under 20 ms or over 60 ms"
    longer = answer_of(SAVING | {"estimate": -40.0, "ci_adjusted": [-60.0, -20.0], "significant": True}, _summary())
    assert longer.verdict == "no" and longer.rules_out.startswith("a saving; a cost under 20 ms")


def test_the_control_and_missing_fields() -> None:
    control = {"kind": "control", "role": "control", "scenarios": ["direct-aa", "direct"], "unit": "ms"}
    a = answer_of(control | {"estimate": 5.0, "ci_adjusted": [-10, 20], "significant": False}, _summary("direct-aa"))
    assert (a.verdict, a.pair, a.family, a.effect) == ("passed", "direct-aa vs direct", "control", "+5.0 ms")
    failed = answer_of(control | {"significant": True}, _summary("direct-aa"))
    assert failed.verdict == "FAILED" and failed.interval == "–" and failed.effect == "–"
    bare = answer_of({"kind": "something_new", "scenarios": ["a", "b"]}, {"scenarios": {}})
    assert bare.verdict == "–" and bare.effect == "–" and bare.question == "something new?"


@pytest.mark.parametrize(
    ("scenario", "context"),
    [
        ("pg-socket", "PostgreSQL"),
        ("tls-socket-nonet", "TLS · no network"),
        ("node-socket", "Node.js · TCP"),
        ("pg-pgbouncer-unix", "PostgreSQL · PgBouncer (Unix) · no network"),
        ("socket-relay", "TCP · relay"),
        ("socket-100ms", "TCP · 100 ms delay"),
        ("burst-4-socket-nonet", "TCP · no network · 4 at once"),
        ("socket-fd3", "TCP · fd 3"),
        ("pg-tls-socket", "PostgreSQL over TLS"),
        ("pg-tls-direct-rtt-5ms", "PostgreSQL over TLS · 5 ms RTT"),
    ],
)
def test_context_says_what_kind_of_function_and_backend(scenario: str, context: str) -> None:
    assert context_of(_summary(scenario), scenario) == context


def test_a_run_without_recorded_metadata_uses_the_catalogue() -> None:
    summary = {"scenarios": {"pg-socket": {"n": 3}}, "findings": []}
    assert context_of(summary, "pg-socket") == "PostgreSQL"


def test_answers_come_in_family_order() -> None:
    pg = SPEEDUP | {"scenarios": ["pg-direct", "pg-socket"]}
    found = answers(_summary("direct", "socket", "pg-direct", "pg-socket", findings=[pg, SAVING, SPEEDUP]))
    assert [a.family for a in found] == ["thesis", "thesis", "pg"]


def test_percentiles_need_enough_samples() -> None:
    assert percentile({"n": 19, "p95": 5.0}, "p95", 0) == "–¹"
    assert percentile({"n": 20, "p95": 5.0}, "p95", 0) == "5"
    assert percentile({"n": 99, "p99": 5.0}, "p99", 0) == "–¹"
    assert percentile({"n": 20, "p95": None}, "p95", 0) == "–"


def test_wide_tables_are_split_keeping_the_first_column() -> None:
    wide = Table([f"h{i}" for i in range(23)], [[f"r{i}" for i in range(23)]], "cap")
    parts = split_wide(wide)
    assert [len(p.headers) for p in parts] == [10, 10, 5]
    assert all(p.headers[0] == "h0" and p.rows[0][0] == "r0" for p in parts)
    assert [p.caption for p in parts] == ["", "", "cap"]
    assert sum(len(p.headers) - 1 for p in parts) == 22  # every column kept once
    narrow = Table(["a", "b"], [["1", "2"]])
    assert narrow_tables([Para("x"), narrow, wide])[:2] == [Para("x"), narrow]


def test_an_answer_whose_arms_differ_in_more_than_the_method_names_that_factor() -> None:
    nonet = SAVING | {
        "scenarios": ["socket", "socket-nonet"],
        "differs_in": ["network_mode"],
        "comparison_kind": "factor",
    }
    a = answer_of(nonet, _summary("socket", "socket-nonet"))
    assert a.pair == "socket-nonet vs socket [effect of: network_mode]"
    stack = SAVING | {
        "scenarios": ["direct", "socket-nonet"],
        "differs_in": ["network_mode"],
        "comparison_kind": "stack",
    }
    assert answer_of(stack, _summary("direct", "socket-nonet")).pair.endswith("[stack comparison: network_mode]")
    assert answer_of(SAVING | {"differs_in": []}, _summary("direct", "socket")).pair == "socket vs direct"


def test_the_terminal_labels_a_stack_comparison_as_such() -> None:
    from coldstart_bench.analyse.report.terminal import answer_lines

    stack = SPEEDUP | {
        "scenarios": ["direct", "socket-nonet"],
        "differs_in": ["network_mode"],
        "comparison_kind": "stack",
    }
    lines = answer_lines(_summary("direct", "socket", "socket-nonet", findings=[SPEEDUP, stack]), budget=20)
    text = "\n".join(lines)
    assert "socket-nonet vs direct [stack comparison: network_mode]" in text
    assert any(line.strip().startswith("socket vs direct ") for line in lines), text
