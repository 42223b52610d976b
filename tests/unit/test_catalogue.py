"""The scenario catalogue: the study design as data, and the claim that nothing else knows an id."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from synthetic_samples import scenario_samples, thesis_run

from coldstart_bench.analyse.report.declared import plot_members
from coldstart_bench.analyse.run import AnalysisConfig, analyse
from coldstart_bench.catalogue import (
    CONTROL,
    HEADLINE,
    LIFECYCLE_SAVING,
    Catalogue,
    Finding,
    Reference,
    Scenario,
    default_catalogue,
)

PACKAGE = Path(__file__).resolve().parents[2] / "coldstart_bench"


def _refs(catalogue: Catalogue, sid: str, present: list[str]) -> list[tuple[str, bool]]:
    return [(r.scenario, r.headline) for r in catalogue.references_of(sid, present)]


def test_reference_pairs() -> None:
    cat = default_catalogue()
    present = [
        "socket",
        "direct",
        "direct-100ms",
        "socket-100ms",
        "socket-nonet",
        "pg-direct",
        "pg-socket",
        "burst-1-socket-nonet",
        "burst-4-socket-nonet",
        "burst-4-direct",
    ]
    assert _refs(cat, "socket", present) == [("direct", True)]
    assert _refs(cat, "direct", present) == []
    assert _refs(cat, "socket-100ms", present) == [("direct", False), ("direct-100ms", True)]
    assert _refs(cat, "socket-nonet", present) == [("direct", False), ("socket", True)]
    assert _refs(cat, "pg-socket", present) == [("pg-direct", True)]
    assert _refs(cat, "burst-4-socket-nonet", present) == [("burst-1-socket-nonet", False), ("burst-4-direct", True)]
    assert _refs(cat, "socket", ["socket"]) == []


def test_families_and_axes() -> None:
    cat = default_catalogue()
    assert [s.id for s in cat.family("thesis")] == ["socket", "direct", "direct-10ms", "direct-50ms", "direct-100ms"]
    assert {s.id for s in cat.family("extended")} == {"socket-nonet", "socket-100ms", "fallback", "socket-return"}
    assert [s.id for s in cat.family("control")] == ["direct-aa"]
    assert {s.family for s in cat} == {
        "thesis",
        "extended",
        "control",
        "pg",
        "burst",
        "runtime",
        "lang",
        "pg-proxy",
        "tls",
        "pg-tls",
    }
    for s in cat:
        if s.family in ("runtime", "lang", "pg-proxy"):
            continue  # the hand-off, language, entrypoint and proxy axes have tests of their own
        assert (s.runtime, s.language, s.transport, s.entrypoint, s.handoff) == (
            "runc",
            "python",
            "tls" if s.family in ("tls", "pg-tls") else "tcp",
            "in-process",
            "relay" if s.id.endswith(("tls-relay", "tls-relay-nonet")) else "fd",
        )
    assert [s.id for s in cat.family("tls")] == [
        "tls-direct",
        "tls-socket",
        "tls-socket-nonet",
        "tls-relay",
        "tls-relay-nonet",
        "tls-direct-10ms",
    ]
    # the A/A control is direct in every setting, compared with it as the false-positive check
    aa, direct = cat.by_id("direct-aa"), cat.by_id("direct")
    same = ("mode", "delay_ms", "network", "pool_up", "release", "burst", "backend", "expect_path")
    assert all(getattr(aa, f) == getattr(direct, f) for f in same)
    assert [(r.scenario, r.role) for r in aa.references] == [("direct", CONTROL)]
    assert cat.by_id("socket").references[0].role == HEADLINE


def test_a_non_default_runtime_gets_its_own_id() -> None:
    s = dataclasses.replace(default_catalogue().by_id("socket"), runtime="runsc")
    assert s.id == "socket@runsc" and s.name == "socket"
    cat = default_catalogue()
    cat.register(s)
    assert cat.by_id("socket@runsc").runtime == "runsc" and "socket" in cat


def test_register_refuses_duplicates_and_bad_names() -> None:
    cat = default_catalogue()
    with pytest.raises(ValueError, match="already in the catalogue"):
        cat.register(Scenario("socket", "socket"))
    with pytest.raises(ValueError, match="scenario name"):
        cat.register(Scenario("has space", "socket"))
    cat.register(Scenario("socket", "socket", family="thesis"), replace=True)
    assert cat.by_id("socket").references == ()


def test_expectations_live_in_the_catalogue() -> None:
    texts = default_catalogue().expectations()
    assert "socket.connect_us.median <= direct.connect_us.median / 2" in texts
    assert len(texts) == 11 and len(set(texts)) == 11  # the thesis seven, node, tls, the tls and pg-tls relays
    assert "tls-socket.connect_us.median <= tls-direct.connect_us.median / 5" in texts
    assert default_catalogue().expectations(["pg-socket"]) == [
        "pg-socket.connect_us.median <= pg-direct.connect_us.median / 5"
    ]


def test_a_scenario_added_at_runtime_reaches_comparisons_findings_and_plots() -> None:
    cat = default_catalogue()
    cat.register(
        Scenario(
            "socket-warm",
            "socket",
            family="extended",
            references=(
                Reference("direct", headline=True, findings=(Finding(LIFECYCLE_SAVING, "warm", "A warm pool"),)),
            ),
            diff_reference="socket",
        )
    )
    samples = thesis_run(n=12) + scenario_samples("socket-warm", 12, 240.0, 330.0, mode="socket", seed=9)
    a = analyse(samples, {}, AnalysisConfig(bootstrap_resamples=100, catalogue=cat))
    pairs = {(c["a"], c["b"], c["metric"], c["emphasis"]) for c in a.summary["comparisons"]}
    assert ("socket-warm", "direct", "lifecycle_ms", True) in pairs
    warm = [f for f in a.summary["findings"] if f["topic"] == "warm"]
    assert len(warm) == 1 and warm[0]["scenarios"] == ["direct", "socket-warm"] and "A warm pool" in warm[0]["text"]
    assert a.summary["scenarios"]["socket-warm"]["declared"]["family"] == "extended"
    members = plot_members(a.summary)
    for plot in ("connect_per_iteration.png", "ecdf_connect.png", "box_lifecycle.png", "lifecycle_vs_delay.png"):
        assert "socket-warm" in members[plot], plot
    assert "socket-warm" not in members["burst.png"]


def test_a_burst_point_added_at_runtime_reaches_the_burst_plot() -> None:
    cat = default_catalogue((1, 2))
    cat.register(Scenario("burst-3-direct", "direct", burst=3, family="burst", burst_series="direct"))
    samples = scenario_samples("burst-1-direct", 6, 951, 353, burst=1) + scenario_samples(
        "burst-3-direct", 6, 951, 500, burst=3, seed=2
    )
    a = analyse(samples, {}, AnalysisConfig(bootstrap_resamples=100, catalogue=cat))
    members = plot_members(a.summary)
    assert members["burst.png"] == ["burst-1-direct", "burst-3-direct"]
    assert "burst-3-direct" not in members["ecdf_connect.png"]
    assert any(f["topic"] == "burst" and f["scenarios"] == ["burst-1-direct", "burst-3-direct"]
               for f in a.summary["findings"])  # fmt: skip


# Words that are both a scenario id and a value of another declared field (mode or path).
_ALSO_A_MODE = {"socket", "direct", "fallback"}


def _string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_scenario_id_or_id_pattern_outside_the_catalogue() -> None:
    ids = set(default_catalogue().ids) - _ALSO_A_MODE
    id_like = re.compile(r"\b(?:burst-\d|pg-(?:direct|socket)|(?:direct|socket)-(?:\d|nonet|return|aa))")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "catalogue.py" and path.parent == PACKAGE:
            continue
        for line, value in _string_constants(ast.parse(path.read_text(), str(path))):
            if value in ids or id_like.search(value) or re.search(r"\^\(?(?:burst|direct|socket|pg)", value):
                offenders.append(f"{path.relative_to(PACKAGE)}:{line}: {value!r}")
    assert offenders == []
