"""The package's import structure: dependencies point one way (data, metrics <- models <- training <- cli)
and no module imports, directly or through others, a module that imports it back. Imports are read from
the source (every ``import`` statement, also those inside functions), so nothing is executed."""

from __future__ import annotations

import ast
from pathlib import Path

import scenedecomp

PACKAGE = Path(scenedecomp.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def imports_of(name: str) -> set[str]:
    """The package's modules that module ``name`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    return {m for m in found if m in MODULES and m != name}


def test_models_never_import_training():
    offenders = {name: sorted(m for m in imports_of(name) if m.startswith("scenedecomp.training"))
                 for name in MODULES if name.startswith("scenedecomp.models")}
    assert not {k: v for k, v in offenders.items() if v}
    assert "scenedecomp.models.monet" in offenders  # the walk found the models


def test_data_and_metrics_import_neither_models_nor_training():
    for name in MODULES:
        if name.startswith(("scenedecomp.data", "scenedecomp.metrics")):
            bad = [m for m in imports_of(name) if m.startswith(("scenedecomp.models", "scenedecomp.training",
                                                                 "scenedecomp.cli"))]
            assert not bad, (name, bad)


def test_no_import_cycles():
    graph = {name: imports_of(name) for name in MODULES}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, cycles


def test_the_walk_resolves_relative_and_function_level_imports():
    # hdf5: ``from .registry import ...`` at the top; data/__init__: ``from . import hdf5`` in a function
    assert "scenedecomp.data.registry" in imports_of("scenedecomp.data.hdf5")
    assert "scenedecomp.data.hdf5" in imports_of("scenedecomp.data")
