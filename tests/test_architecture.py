"""The package's shape, read from its source (ast, nothing executed): no import cycles (lazy
imports included), no module over 400 lines, layers that point one way, private names private."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "imgret"
MAX_LINES = 400

# What each sub-package may import besides itself (docs/architecture.md draws the same).
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "models": {"core", "data"},
    "viz": {"core", "data"},
    "store": {"core"},
    "retrieval": {"core", "data", "models", "store"},
    "training": {"core", "data", "models", "retrieval"},
    "evaluation": {"core", "data", "models", "retrieval", "store"},
    "scaleout": {"core", "data", "models", "store"},
    "jobs": {"core", "data", "models", "training", "store", "retrieval", "evaluation", "viz",
             "scaleout"},  # fmt: skip
    "web": {"core", "data", "models", "store", "retrieval", "jobs", "viz"},
    "cli": {"core", "data", "models", "training", "store", "retrieval", "evaluation", "jobs",
            "viz", "web", "scaleout"},  # fmt: skip
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) of every import statement, at any depth."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "imgret"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here[: len(here) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "imgret":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:  # `from package import module`
                    found.append((sub, []))
                else:
                    found.append((base, [alias.name]))
    return [(m, names) for m, names in found if m in modules]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {n: {m for m, _ in _imports(n, p, modules)} - {n} for n, p in modules.items()}


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_module_over_400_lines() -> None:
    long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert {n: lines for n, lines in long.items() if lines > MAX_LINES} == {}


def test_layers_point_one_way() -> None:
    bad = []
    for name, deps in _graph().items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in ALLOWED:
            continue
        for dep in deps:
            dep_parts = dep.split(".")
            if len(dep_parts) < 2 or dep_parts[1] == parts[1]:
                continue
            if dep_parts[1] not in ALLOWED[parts[1]]:
                bad.append(f"{name} -> {dep}")
    assert bad == []


def test_private_names_stay_in_their_module() -> None:
    modules = _modules()
    crossing = [
        f"{n} imports {m}.{x}"
        for n, p in modules.items()
        for m, names in _imports(n, p, modules)
        for x in names
        if x.startswith("_") and not x.startswith("__")
    ]
    tests = Path(__file__).resolve().parent
    for path in tests.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                crossing += [
                    f"{path.name} imports {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert crossing == []


def test_the_checks_see_the_package() -> None:
    graph = _graph()
    assert "imgret.retrieval.searcher" in graph
    assert "imgret.store.index_files" in graph["imgret.retrieval.searcher"]
    assert "imgret.models.head" in graph["imgret.models.registry"]  # a lazy import counts
