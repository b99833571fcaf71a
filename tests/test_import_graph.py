"""The import graph between oncodiff's packages follows docs/design.md's package map, with no cycle."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "oncodiff"
DESIGN = ROOT / "docs" / "design.md"


def allowed_arrows() -> dict[str, set[str]]:
    """docs/design.md's package map: ``| `oncodiff.X` | owns | may import |`` -> {X: {may import}}."""
    allowed = {}
    for line in DESIGN.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`oncodiff\.(\w+)`\s*\|[^|]*\|([^|]*)\|\s*$", line)
        if match:
            allowed[match[1]] = {name.strip() for name in match[2].split(",") if name.strip()}
    return allowed


def _package(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _imported_modules(path: Path) -> list[tuple[str, int]]:
    """Absolute names of every ``oncodiff`` module that ``path`` imports, at any depth, with the line."""
    module = ["oncodiff", *path.relative_to(SRC).with_suffix("").parts]
    here = module[:-1]  # the package a relative import starts from
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            names.append((".".join(base + ([node.module] if node.module else [])), node.lineno))
    return [(name, line) for name, line in names if name.startswith("oncodiff.")]


def package_arrows() -> dict[tuple[str, str], str]:
    """{(importing package, imported package): "file:line" of one such import} over src/oncodiff."""
    arrows = {}
    for path in sorted(SRC.rglob("*.py")):
        source = _package(path)
        for name, line in _imported_modules(path):
            target = name.split(".")[1]
            if target != source:
                arrows.setdefault((source, target), f"{path.relative_to(ROOT)}:{line}")
    return arrows


def _cycle(arrows) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for source, target in arrows:
        graph.setdefault(source, set()).add(target)
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            found = visit(target, path + [node])
            if found:
                return found
        done.add(node)
        return None

    for node in sorted(graph):
        found = visit(node, [])
        if found:
            return found
    return None


def test_the_package_map_names_every_package():
    packages = {_package(path) for path in SRC.rglob("*.py")} - {"__init__"}
    assert packages <= set(allowed_arrows()), f"not in docs/design.md's package map: {packages - set(allowed_arrows())}"


def test_no_import_outside_the_package_map():
    allowed = allowed_arrows()
    forbidden = [f"{source} -> {target} ({where})" for (source, target), where in package_arrows().items()
                 if target != "__init__" and target not in allowed.get(source, set())]
    assert not forbidden, "arrows docs/design.md's package map does not allow:\n" + "\n".join(forbidden)


def test_no_cycle_between_packages():
    cycle = _cycle(package_arrows())
    assert cycle is None, "a cycle between packages: " + " -> ".join(cycle)


@pytest.mark.parametrize("arrows, cycle", [
    ({("a", "b"), ("b", "c")}, None),
    ({("a", "b"), ("b", "c"), ("c", "a")}, ["a", "b", "c", "a"]),
])
def test_cycle_finder(arrows, cycle):
    assert _cycle(arrows) == cycle


def test_the_walk_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    package = tmp_path / "src" / "oncodiff" / "pipeline"
    package.mkdir(parents=True)
    (package / "x.py").write_text("def f():\n    from oncodiff.evaluation import metrics\n\nfrom ..training import y\n")
    monkeypatch.setattr(f"{__name__}.SRC", tmp_path / "src" / "oncodiff")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert set(package_arrows()) == {("pipeline", "evaluation"), ("pipeline", "training")}
