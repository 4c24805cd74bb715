"""The package's import structure: every module belongs to one layer of :data:`ORDER` and imports only from
its own layer or the layers below it (README, "Architecture"), and no module imports, directly or through
others, a module that imports it back. Imports are read from the source (every ``import`` statement, also
those inside functions), so nothing is executed."""

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


# the layers, lowest first; a module may import from its own layer and the layers before it
ORDER = (
    ("version", "errors", "choices", "safeio", "hardware"),  # the foundation: no package imports above it
    ("data", "metrics"),
    ("models",),
    ("config",),
    ("viz",),
    ("inference",),
    ("evaluation",),
    ("training",),
    ("bench",),
    ("cli", "__main__"),
)
TOP = ""  # the package's own __init__ (the public API): above every layer, imports lazily


def layer_of(name: str) -> int:
    """The index in :data:`ORDER` of module ``scenedecomp.<room>[...]``'s room."""
    parts = name.split(".")
    if len(parts) == 1:
        return len(ORDER)
    room = parts[1]
    for i, rooms in enumerate(ORDER):
        if room in rooms:
            return i
    raise AssertionError(f"{name}: its package {room!r} has no place in ORDER")


def back_arrows(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{name} -> {dep}" for name, deps in graph.items() for dep in deps
                  if layer_of(dep) > layer_of(name))


def test_every_package_folder_is_a_package():
    """A folder of modules without ``__init__.py`` would import from a checkout but be left out of the wheel."""
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    assert sorted(str(f.relative_to(PACKAGE)) for f in folders if not (f / "__init__.py").is_file()) == []


def test_every_module_has_a_layer():
    assert len(MODULES) > 60  # the walk found the package
    for name in MODULES:
        layer_of(name)


def test_imports_point_down_the_order():
    assert not back_arrows({name: imports_of(name) for name in MODULES})


def test_a_back_arrow_is_caught():
    graph = {name: imports_of(name) for name in MODULES}
    graph["scenedecomp.models.monet"] = graph["scenedecomp.models.monet"] | {"scenedecomp.training.module"}
    graph["scenedecomp.data.registry"] = graph["scenedecomp.data.registry"] | {"scenedecomp.config"}
    assert back_arrows(graph) == ["scenedecomp.data.registry -> scenedecomp.config",
                                  "scenedecomp.models.monet -> scenedecomp.training.module"]


def test_only_the_cli_parses_arguments():
    """Flags are named in one package: no module outside ``cli/`` builds an argparse parser."""
    outside = sorted(name for name, path in MODULES.items() if not name.startswith("scenedecomp.cli")
                     and "argparse" in {alias.name for node in ast.walk(ast.parse(path.read_text()))
                                        if isinstance(node, ast.Import) for alias in node.names})
    assert not outside


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
