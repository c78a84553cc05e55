"""The package graph runs downward only (STYLE.md): no import from a lower package to a higher one, none
sideways between the step packages, no cycle, and no library function of 100 lines or more."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "gptctl"

# Rank of each top-level module/package: it may import only from ranks at or below its own, and the step
# packages (rank 4) not from each other: what they share moves down.
RANKS = {
    "__init__": 0,
    "errors": 0,
    "progress": 0,
    "yamlfile": 1,
    "outputs": 1,
    "manifest": 1,
    "logs": 1,
    "options": 2,
    "catalog": 2,
    "model_source": 2,
    "runtime": 3,
    "evaluation": 3,
    "export": 4,
    "optimize": 4,
    "selection": 4,
    "bench": 4,
    "serve": 4,
    "recipe": 5,
    "tune": 5.5,  # built on the recipe runner: tune imports recipe, never the other way
    "cli": 6,
    "__main__": 6,
}
SIDEWAYS_FORBIDDEN = 4


def _unit(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level gptctl unit) of every gptctl import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    pkg = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                names = [".".join((*base, node.module or ""))]
            else:
                names = [node.module or ""]
            if names[0] == "gptctl":  # `from gptctl import x`: x is the unit
                names = [f"gptctl.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "gptctl" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def _files() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_every_unit_has_a_rank():
    units = {_unit(f) for f in _files()}
    assert units <= set(RANKS), f"give these a rank in RANKS: {sorted(units - set(RANKS))}"


def test_imports_run_downward_only():
    bad = []
    for f in _files():
        me = _unit(f)
        for line, other in _imports(f):
            if other == me or other not in RANKS:
                continue
            if RANKS[other] > RANKS[me] or (RANKS[other] == RANKS[me] == SIDEWAYS_FORBIDDEN):
                bad.append(f"{f.relative_to(ROOT.parent)}:{line} ({me}) imports gptctl.{other}")
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_modules():
    """Module-level imports (not those inside functions) form no cycle."""

    def name(f: Path) -> str:
        return ".".join(f.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")

    modules = {name(f) for f in _files()}
    graph: dict[str, set[str]] = {}
    for f in _files():
        deps = set()
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gptctl") and not node.level:
                # `from gptctl.pkg import submodule` depends on the submodule, not on the package's __init__
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules
                deps |= subs or {node.module}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("gptctl")}
        graph[name(f)] = deps
    seen: dict[str, int] = {}

    def visit(mod: str, stack: list[str]) -> None:
        if seen.get(mod) == 2:
            return
        if seen.get(mod) == 1:
            cycle = stack[stack.index(mod) :] + [mod]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        seen[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            if dep in graph:
                visit(dep, stack + [mod])
        seen[mod] = 2

    for mod in sorted(graph):
        visit(mod, [])


def test_no_library_function_of_100_lines_or_more():
    long = []
    for f in _files():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 >= 100:
                long.append(f"{f.relative_to(ROOT.parent)}:{node.lineno} {node.name}")
    assert not long, long
