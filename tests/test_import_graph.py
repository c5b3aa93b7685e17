"""Imports flow one way (DESIGN.md): no module imports itself back through others, and no lower
layer imports a higher one. Every `import` statement counts, at module level or inside a
function: a deferred import still ties the two modules together.

Pure: the sources are parsed with `ast`, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "distillery"

# DESIGN.md's order, bottom first: config, then data/models/strategies, train/cache, stages,
# evaluation/tuning, monitoring, serving, cli. A name is a module or a package (all of it) of
# distillery; a module belongs to the longest name that holds it, and may import its own layer
# and those below.
LAYERS = [
    # the spec, the store with its layout, connecting to Ray; "" is the package's __init__
    ("", "config", "storage", "store_layout", "runtime"),
    # losses: the pure functions strategies are made of
    ("data", "models", "strategies", "losses"),
    ("train", "cache"),
    ("stages",),
    # compare and quickstart run stages and evaluate; lm is the language-model pipeline, its
    # stages through its own evaluate report (drawn with evaluation's plots)
    ("evaluation", "tuning", "compare", "quickstart", "lm"),
    ("monitoring",),
    ("serving",),
    # lm.commands: the CLI's commands for a language-model spec
    ("cli", "lm.commands"),
]


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(module: str, path: Path, known: dict[str, Path]) -> set[tuple[str, int]]:
    """(imported module of the package, line) for every import statement in `path`.
    `from a import b` is an import of a.b when that is a module, else of a."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # import a.b.c of a module a.b: an attribute
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add((name, node.lineno))
    return found


def graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}."""
    known = modules()
    edges: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        edges[module] = {}
        for target, line in sorted(imports(module, path, known)):
            edges[module].setdefault(target, line)
    return edges


def layer_of(module: str) -> int | None:
    name = module.removeprefix("distillery").removeprefix(".")
    holders = [(len(entry), layer) for layer, entries in enumerate(LAYERS) for entry in entries
               if name == entry or (entry and name.startswith(entry + "."))]
    return max(holders)[1] if holders else None


def layer_name(module: str) -> str:
    return "/".join(entry or "distillery" for entry in LAYERS[layer_of(module)])


def where(edges: dict[str, dict[str, int]], source: str, target: str) -> str:
    file = modules()[source].relative_to(PACKAGE.parents[1])
    return f"{file}:{edges[source][target]}: {source} -> {target}"


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (its modules in import order) per strongly connected group of modules
    (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in edges:
        if node not in index:
            visit(node)
    return [shortest_cycle(edges, set(group)) for group in groups]


def shortest_cycle(edges: dict[str, dict[str, int]], group: set[str]) -> list[str]:
    """The shortest cycle through the group's first module (by name), by breadth-first search."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in edges[node]:
                if nxt == start:
                    return paths[node]
                if nxt in group and nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def test_every_module_has_a_layer_and_every_layer_entry_exists():
    known = modules()
    assert [m for m in known if layer_of(m) is None] == [], (
        "modules missing from LAYERS in tests/test_import_graph.py; place them by DESIGN.md")
    names = {m.removeprefix("distillery").removeprefix(".") for m in known}
    stale = [entry for entries in LAYERS for entry in entries if entry not in names]
    assert stale == [], "LAYERS names modules that do not exist"


def test_no_import_cycles():
    edges = graph()
    found = ["\n  ".join(where(edges, a, b)
                         for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True))
             for cycle in cycles(edges)]
    assert not found, "import cycles:\n  " + "\n\n  ".join(found)


def test_no_lower_layer_imports_a_higher_one():
    edges = graph()
    found = [f"{where(edges, source, target)} ({layer_name(source)} is below "
             f"{layer_name(target)})"
             for source in sorted(edges) for target in edges[source]
             if layer_of(target) > layer_of(source)]
    assert not found, "imports against DESIGN.md's order:\n  " + "\n  ".join(found)


def test_the_checks_see_function_level_imports_and_cycles(tmp_path):
    """The parser counts an import inside a function; the cycle search finds a cycle."""
    (tmp_path / "a.py").write_text("def f():\n    from distillery.b import g\n")
    known = {"distillery.a": tmp_path / "a.py", "distillery.b": tmp_path / "b.py"}
    assert imports("distillery.a", known["distillery.a"], known) == {("distillery.b", 2)}
    edges = {"x": {"y": 1}, "y": {"z": 1}, "z": {"x": 1, "w": 1}, "w": {}}
    assert cycles(edges) == [["x", "y", "z"]]
