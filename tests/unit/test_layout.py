"""Issue 36: the package layout shows the architecture: layers whose imports point one way, short files, and a
package `__init__` that says what lives there (docs/architecture.md draws the same layers)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = [
    {"utils"},
    {"config"},
    {"models", "data"},
    {"configure"},
    {"dist"},
    {"run"},
    {"eval"},
    {"training"},
    {"sweeps"},
    {"train"},
    {"cli", "__init__"},
]
"""Lowest first: a module imports its own package or a lower layer (at module level or inside a function)."""


def layer_of(top: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if top in names)


def distgan_imports(path: Path) -> set[str]:
    """The first component under distgan of everything the file imports from distgan."""
    tops = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distgan"):
            parts = node.module.split(".")
            tops |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            tops |= {a.name.split(".")[1] for a in node.names if a.name.startswith("distgan.")}
    return tops


def test_imports_point_down_the_layers() -> None:
    upward = []
    for path in sorted((ROOT / "distgan").rglob("*.py")):
        rel = path.relative_to(ROOT / "distgan")
        own = rel.parts[0].removesuffix(".py")
        for top in distgan_imports(path) - {own}:
            if layer_of(top) >= layer_of(own):
                upward.append(f"distgan/{rel} imports distgan.{top} (layer {layer_of(top)} >= {layer_of(own)})")
    assert not upward, upward


def _module_graph() -> dict[str, set[str]]:
    """distgan's modules (dotted; a package is its __init__) and the distgan modules each imports, at module level
    or inside functions. `from distgan.run import sample` is an edge to distgan.run.sample."""
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (ROOT / "distgan").rglob("*.py")
    }

    def resolve(name: str) -> str:
        parts = name.split(".")
        while ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts)

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distgan"):
                edges |= {resolve(f"{node.module}.{a.name}") for a in node.names}
            elif isinstance(node, ast.Import):
                edges |= {resolve(a.name) for a in node.names if a.name.startswith("distgan")}
        graph[name] = edges - {name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    """Issue 53: no group of modules imports itself round, with no exceptions listed; and no module is reached by
    name (importlib), which would hide an edge from this test."""
    assert _circles(_module_graph()) == []
    by_name = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "distgan").rglob("*.py"))
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.Call)
        and getattr(n.func, "attr", getattr(n.func, "id", "")) in ("import_module", "__import__")
        and n.args
        and isinstance(n.args[0], ast.Constant)
        and str(n.args[0].value).startswith("distgan")
    ]
    assert by_name == []


def test_the_circle_finder_finds_circles() -> None:
    """The check above fails on a circle: a made-up graph with one of three modules and a self-standing one."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def test_every_module_is_in_a_layer() -> None:
    """Every package and top-level module is placed in LAYERS. (Size is ruff's to judge, by complexity rather
    than lines: C901 and PLR0912/PLR0915 in pyproject.toml, run by .ci/run.)"""
    tops = {p.name.removesuffix(".py") for p in (ROOT / "distgan").iterdir() if p.suffix == ".py" or p.is_dir()}
    tops.discard("__pycache__")
    assert tops == set().union(*LAYERS), tops ^ set().union(*LAYERS)


def test_package_docstrings_say_what_lives_there() -> None:
    """Each package's __init__ opens with a docstring whose first paragraph (what lives there) is at most two
    lines; detail may follow after a blank line, as PEP 257 has it."""
    missing = []
    for init in (ROOT / "distgan").rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()), clean=False)
        first = doc.strip().split("\n\n")[0].splitlines() if doc else []
        if not first or len(first) > 2:
            missing.append(f"{init.relative_to(ROOT)}: its docstring opens with {len(first)} lines")
    assert not missing, missing


def _imports(path: Path) -> set[str]:
    """Every distgan module a file imports (at module level or inside functions), as dotted names."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distgan"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from distgan.run import sample`
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("distgan")}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "run_module" and node.args:
            arg = node.args[0]  # runpy.run_module("distgan.cli", run_name="__main__"): `python -m`
            if isinstance(arg, ast.Constant) and str(arg.value).startswith("distgan"):
                out.add(f"{arg.value}.__main__")
    return out


def test_the_fast_tier_reaches_every_module() -> None:
    """Issue 47: `bash launch/test.sh` (tests/unit, in-process) loads every module of distgan/: what the unit
    tests import, and what those modules import in turn."""
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (ROOT / "distgan").rglob("*.py")
    }
    todo = [m for p in (ROOT / "tests" / "unit").glob("*.py") for m in _imports(p) if m in modules]
    reached: set[str] = set()
    while todo:
        m = todo.pop()
        if m in reached:
            continue
        reached.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # a module's packages load first
        todo += [x for x in _imports(modules[m]) if x in modules]
    assert not sorted(set(modules) - reached), sorted(set(modules) - reached)
