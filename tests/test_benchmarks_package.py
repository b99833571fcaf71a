"""benchmarks/ stays a set of thin drivers over importable functions: no sys.path edits, no private imports
from oncodiff, and no function over 50 lines (docs/design.md; the house issue)."""

from __future__ import annotations

import ast
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MAX_LINES = 50


def modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in sorted(BENCHMARKS.glob("*.py"))]


def test_there_are_benchmarks_to_check():
    assert len(modules()) >= 10


def test_no_benchmark_edits_sys_path():
    assert [p.name for p in BENCHMARKS.glob("*.py") if "sys.path" in p.read_text(encoding="utf-8")] == []


def test_no_benchmark_imports_a_private_name_of_oncodiff():
    private = [f"{path.name}: {node.module}.{alias.name}" for path, tree in modules() for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("oncodiff")
               for alias in node.names if alias.name.startswith("_")]
    assert private == []


def test_no_benchmark_function_is_over_50_lines():
    long = [f"{path.name}: {node.name} ({node.end_lineno - node.lineno + 1} lines)" for path, tree in modules()
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert long == []
