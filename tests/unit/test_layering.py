"""The package's import graph has no cycle, counting type-only and deferred imports too; the
measuring wing never imports the analysing one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "coldstart_bench"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    return _imports_of_source(path.read_text(), path, modules)


def _imports_of_source(source: str, path: Path, modules: set[str]) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        out.update(c for c in candidates if c in modules and c != name)
    return out


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_measuring_wing_does_not_import_the_analysing_wing() -> None:
    graph = _graph()
    for module, deps in graph.items():
        if module.startswith("coldstart_bench.measure"):
            assert not {d for d in deps if d.startswith("coldstart_bench.analyse")}, module


PACKAGE_NAME = "coldstart_bench"
# The floor: the data every layer shares. It imports nothing of the package but itself.
FLOOR = {"coldstart_bench.results", "coldstart_bench.samples", "coldstart_bench.phases"}
# Scenario data (the catalogue and what it is planned and extended with) stands on the floor.
SCENARIO_DATA = {"coldstart_bench.catalogue", "coldstart_bench.plan", "coldstart_bench.userscenarios"}
# The measuring wing: the parts (containers/) and measure/; it stands on scenario data and the floor.
MEASURING = ("coldstart_bench.measure", "coldstart_bench.containers")


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _upward(allowed: set[str], prefixes: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """Imports (type-only and deferred ones too) of each module in `allowed`/`prefixes` that leave them."""
    graph = _graph()
    out: dict[str, set[str]] = {}
    for module, deps in graph.items():
        if module in allowed or _within(module, prefixes):
            bad = {d for d in deps if d != PACKAGE_NAME and d not in allowed and not _within(d, prefixes)}
            if bad:
                out[module] = bad
    return out


def test_the_floor_imports_nothing_above_it() -> None:
    """results, samples and the phases they name import no other module of the package, not even
    for a type name."""
    assert _upward(FLOOR) == {}


def test_the_catalogue_stands_on_the_floor_only() -> None:
    assert _upward(FLOOR | SCENARIO_DATA) == {}


def test_the_measuring_wing_imports_nothing_above_it() -> None:
    """measure/ and containers/ never import the plugin, its options, the harness, the analysis or
    the reports: they run without pytest and the analysis runs without them."""
    assert _upward(FLOOR | SCENARIO_DATA, MEASURING) == {}


def test_the_layering_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check finds a type-only import (what let results.py lean on analyse/ before)."""
    module = tmp_path / "mod.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .analyse.gate import GateResult\n")
    modules = {"coldstart_bench.analyse.gate", "coldstart_bench.analyse"}
    fake = PACKAGE / "results.py"  # resolved as if it were results.py, the floor
    assert _imports_of_source(module.read_text(), fake, modules) == {"coldstart_bench.analyse.gate"}


def test_the_options_do_not_reach_into_the_measuring_wing() -> None:
    """Option parsing stays importable without Docker's SDK and the testbed."""
    assert {d for d in _graph()["coldstart_bench.options"] if _within(d, MEASURING)} == set()
