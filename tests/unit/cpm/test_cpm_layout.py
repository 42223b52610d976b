"""The pool manager stays in rooms: no module over 500 lines, no class over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
MANAGER_MODULES = sorted([REPO / "components" / "pool_manager.py", *(REPO / "components" / "cpm").glob("*.py")])
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 400


def test_the_rooms_exist() -> None:
    names = {p.stem for p in MANAGER_MODULES}
    assert {"server", "policy", "refill", "stats", "core", "model", "manager"} <= names


@pytest.mark.parametrize("path", MANAGER_MODULES, ids=lambda p: p.name)
def test_module_and_class_sizes(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    lines = source.count("\n") + 1
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines (limit {MAX_MODULE_LINES})"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            span = (node.end_lineno or node.lineno) - node.lineno + 1
            assert span <= MAX_CLASS_LINES, f"{path.name}: class {node.name} spans {span} lines"


def test_entry_point_keeps_public_names() -> None:
    from components import pool_manager

    assert {"Manager", "Pool", "main", "raise_fd_limit"} <= set(dir(pool_manager))
