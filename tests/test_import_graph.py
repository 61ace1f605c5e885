"""The package's import graph is acyclic, counting every import anywhere in a module (a deferred
import inside a function may not hide a cycle), and no library module outgrows 500 lines (the
SERGIO port, a translation of the reference simulator, excepted)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "activa_ppl"
LONG_MODULES_ALLOWED = {"simulate/sergio.py"}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = ("activa_ppl",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The package module ``name`` refers to (a module, or a name inside one), else ``None``."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> nx.DiGraph:
    """Module -> imported package module, from the AST of every file: ``import a.b`` imports
    ``a.b``; ``from a.b import c`` imports the module ``a.b.c`` if there is one, else ``a.b``
    (so ``from activa_ppl import loop`` is an edge to ``loop`` and ``import activa_ppl`` one to
    the package root)."""
    files = {(_module_name(p)): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                found = _resolve(target, modules)
                if found and found != module:
                    graph.add_edge(module, found)
    return graph


def test_import_graph_is_acyclic():
    graph = import_graph()
    assert graph.number_of_edges() > 40  # the parser sees the imports
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_a_cycle_would_be_found():
    graph = import_graph()
    graph.add_edge("activa_ppl.mixture", "activa_ppl.model")  # model imports mixture
    assert list(nx.simple_cycles(graph))


def test_no_library_module_over_500_lines():
    long = {p.relative_to(PACKAGE).as_posix(): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= LONG_MODULES_ALLOWED, long
