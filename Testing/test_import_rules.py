"""Import rules of the whole tree: no private name crosses a file; the library never imports the application."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT, import_graph

SOURCES = sorted(
    p for folder in ("ProstateKDLib", "training", "Testing", "benchmarks")
    for p in (ROOT / folder).rglob("*.py")
    if "__pycache__" not in p.parts and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
)  # hidden folders (the peer's benchmarks/.venv-peer) are not ours + [ROOT / "ProstateKD.py"]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(path: Path) -> list[str]:
    """``line: what`` for each private module or name ``path`` takes from another file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if any(_private(part) for part in (node.module or "").split(".")):
                found.append(f"{node.lineno}: module {node.module}")
            found += [f"{node.lineno}: {alias.name} from {node.module or '.'}" for alias in node.names
                      if _private(alias.name)]
            modules |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found += [f"{node.lineno}: module {alias.name}" for alias in node.names
                      if any(_private(part) for part in alias.name.split("."))]
            modules |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    for node in ast.walk(tree):  # module._name
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in modules):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_checker_finds_private_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from .dataset import _suffix, ok\nfrom ._common import x\nimport m\nm._hidden()\n"
                      "from __future__ import annotations\n", encoding="utf-8")
    assert private_imports(sample) == ["1: _suffix from dataset", "2: module _common", "4: m._hidden"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_private_name_is_imported_across_files(path):
    found = private_imports(path)
    assert not found, f"{path.relative_to(ROOT)} imports private names of other files: {found}"


def test_library_never_imports_the_application():
    graph = import_graph("ProstateKDLib")
    offenders = {m: sorted(i for i in imported if i.split(".")[0] == "training") for m, imported in graph.items()}
    offenders = {m: i for m, i in offenders.items() if i}
    assert not offenders, f"ProstateKDLib imports training: {offenders}"


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph.get(module, ())):
            if other not in graph:
                continue
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1 or module in graph[module]:
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


def test_the_circle_finder_finds_lazy_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(graph) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["ProstateKDLib", "training"])
def test_no_import_circle(package):
    """Imports anywhere in a file count (a lazy import inside a function closes a circle too)."""
    circles = import_circles(import_graph(package))
    assert not circles, f"import circles in {package}: {circles}"
