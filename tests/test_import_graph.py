"""The import graph of wsl_bench, clarity and baselines: no cycle between packages, no private name across them.

Nodes: each sub-package of wsl_bench (`wsl_bench.report`, `wsl_bench.stages`, ...), each top-level module of
wsl_bench (`wsl_bench.run`, `wsl_bench.config`, ...), and the method packages `clarity` and `baselines`. Every
import counts: module level, inside functions, and under `if TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("wsl_bench", "clarity", "baselines")
RUN_PY_MAX_LINES = 400


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def node_of(module: str) -> str:
    """`wsl_bench.report.writer` -> `wsl_bench.report`; `wsl_bench.run` -> itself; `clarity.x` -> `clarity`."""
    parts = module.split(".")
    if parts[0] != "wsl_bench" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, "", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # `from wsl_bench import run` imports the module wsl_bench.run; `from x import name` a name of x
                out.append((sub, "", node.lineno) if sub in modules else (base, alias.name, node.lineno))
    return sorted((m, n, line) for m, n, line in out if m.split(".")[0] in PACKAGES)


def graph() -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """Edges node -> node -> evidence ('file:line imports x'), and the cross-package private imports."""
    modules = project_modules()
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    private = []
    for module, path in modules.items():
        src = node_of(module)
        for target, name, line in imports_of(module, path, modules):
            dst = node_of(target)
            where = f"{path.relative_to(ROOT).as_posix()}:{line} imports {target}{'.' + name if name else ''}"
            if dst != src:
                if not any(w.startswith(where.split(" imports ")[0] + " ") for w in edges[src][dst]):
                    edges[src][dst].append(where)
                hidden = [p for p in [*target.split("."), name] if p.startswith("_") and not p.startswith("__")]
                if hidden:
                    private.append(where)
    return edges, private


def cyclic_groups(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The groups of nodes that import each other (strongly connected components of 2+ nodes), sorted."""
    nodes = sorted({*edges, *(b for a in edges.values() for b in a)})
    reach = {n: _reachable(edges, n) for n in nodes}
    groups = {frozenset(m for m in reach[n] if n in reach[m]) | {n} for n in nodes}
    return sorted(sorted(g) for g in groups if len(g) > 1)


def _reachable(edges, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in edges.get(todo.pop(), {}):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def shortest_cycle(edges, start: str) -> list[str]:
    """The shortest chain start -> ... -> start (breadth-first), or [] when start is on no cycle."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier and start not in parents:
        nxt = []
        for n in frontier:
            for m in sorted(edges.get(n, {})):
                if m not in parents:
                    parents[m] = n
                    nxt.append(m)
        frontier = nxt
    if start not in parents:
        return []
    chain, n = [start], parents[start]
    while n != start:
        chain.append(n)
        n = parents[n]
    return [start, *reversed(chain[1:]), start]


def describe(group: list[str], edges) -> str:
    """A group's shortest cycle through its first node, then every import inside the group."""
    cycle = shortest_cycle(edges, group[0])
    lines = ["cycle: " + " -> ".join(cycle)]
    for a in group:
        for b in sorted(edges.get(a, {})):
            if b in group:
                more = len(edges[a][b]) - 1
                lines.append(f"  {a} -> {b}: {edges[a][b][0]}" + (f" (and {more} more)" if more else ""))
    return "\n".join(lines)


def test_no_import_cycle_between_packages():
    edges, _ = graph()
    groups = cyclic_groups(edges)
    assert not groups, "import cycles between packages:\n" + "\n\n".join(describe(g, edges) for g in groups)


def test_no_private_name_imported_across_packages():
    _, private = graph()
    assert not private, "private names imported across packages:\n" + "\n".join(private)


def test_the_report_never_imports_the_run():
    edges, _ = graph()
    assert "wsl_bench.run" not in edges.get("wsl_bench.report", {}), edges["wsl_bench.report"]["wsl_bench.run"]


def test_run_py_is_small():
    n = len((ROOT / "wsl_bench" / "run.py").read_text(encoding="utf-8").splitlines())
    assert n <= RUN_PY_MAX_LINES, f"wsl_bench/run.py has {n} lines; the stages live in wsl_bench/stages/"


# the checker itself, on known graphs


def test_cycle_finder_on_known_graphs():
    acyclic = {"a": {"b": ["x"]}, "b": {"c": ["x"]}}
    assert cyclic_groups(acyclic) == [] and shortest_cycle(acyclic, "a") == []
    two = {"a": {"b": ["a.py:1"]}, "b": {"a": ["b.py:2"]}}
    assert cyclic_groups(two) == [["a", "b"]]
    assert describe(["a", "b"], two) == "cycle: a -> b -> a\n  a -> b: a.py:1\n  b -> a: b.py:2"
    three = {"a": {"b": ["x"], "c": ["x"]}, "b": {"c": ["x"]}, "c": {"a": ["x"], "d": ["x"]}, "e": {"f": ["x"]}, "f": {"e": ["x"]}}
    assert cyclic_groups(three) == [["a", "b", "c"], ["e", "f"]]
    assert shortest_cycle(three, "a") == ["a", "c", "a"] and shortest_cycle(three, "d") == []


def test_imports_of_sees_function_level_relative_and_module_imports(tmp_path):
    pkg = tmp_path / "wsl_bench" / "stages"
    pkg.mkdir(parents=True)
    (tmp_path / "wsl_bench" / "__init__.py").write_text("")
    (tmp_path / "wsl_bench" / "run.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "fit.py").write_text(
        "import numpy\nfrom . import base\nfrom wsl_bench import run\n"
        "def f():\n    from wsl_bench.report.writer import _hidden\n")
    (pkg / "base.py").write_text("")
    mods = project_modules(tmp_path)
    assert set(mods) == {"wsl_bench", "wsl_bench.run", "wsl_bench.stages", "wsl_bench.stages.fit", "wsl_bench.stages.base"}
    got = imports_of("wsl_bench.stages.fit", pkg / "fit.py", mods)
    assert got == [("wsl_bench.report.writer", "_hidden", 5), ("wsl_bench.run", "", 3), ("wsl_bench.stages.base", "", 2)]
    assert node_of("wsl_bench.stages.base") == "wsl_bench.stages"
    assert node_of("wsl_bench.run") == "wsl_bench.run"
    assert node_of("clarity.method") == "clarity"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_scanned(package):
    assert any(m.split(".")[0] == package for m in project_modules())
