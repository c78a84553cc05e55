"""Structure the lint pass relies on: ruff configured and run in CI; catalog without an import cycle;
check_entry and build_constraints split into named steps."""

import ast
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the check is the same on any version

ROOT = Path(__file__).resolve().parents[1]


def _functions(path: Path) -> dict[str, int]:
    """name -> length in lines of every function in a module."""
    tree = ast.parse(path.read_text())
    functions = (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return {n.name: n.end_lineno - n.lineno + 1 for n in functions}


def _catalog_imports(path: Path) -> set[str]:
    """The gptctl.catalog modules a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("gptctl.catalog."):
                found.add(node.module.split(".")[2])
            elif node.module == "gptctl.catalog":
                found.update(a.name for a in node.names)
    return found


def test_catalog_modules_import_each_other_without_a_cycle():
    pkg = ROOT / "gptctl" / "catalog"
    graph = {p.stem: _catalog_imports(p) - {p.stem} for p in pkg.glob("*.py") if p.stem != "__init__"}
    assert "loader" not in graph["fastyaml"]  # the piece both need lives below them
    state: dict[str, str] = {}

    def visit(module: str, trail: tuple) -> None:
        if state.get(module) == "done" or module not in graph:
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join(trail + (module,))}"
        state[module] = "open"
        for dep in graph[module]:
            visit(dep, trail + (module,))
        state[module] = "done"

    for module in graph:
        visit(module, ())


@pytest.mark.parametrize(
    "module, function, most",
    [
        ("gptctl/catalog/schema.py", "check_entry", 30),
        ("gptctl/selection/core.py", "build_constraints", 30),
    ],
)
def test_long_functions_are_split_into_named_steps(module, function, most):
    lengths = _functions(ROOT / module)
    assert lengths[function] <= most, f"{function} is {lengths[function]} lines"
    # The rule: no library function of 100 lines or more (tests/test_layering.py checks all of them).
    assert max(lengths.values()) < 100, {k: v for k, v in lengths.items() if v >= 100}


def test_ruff_is_configured_in_pyproject():
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ruff = doc["tool"]["ruff"]
    assert ruff["line-length"] == 120 and ruff["target-version"] == "py310"
    assert {"E", "F", "W", "I", "B", "UP"} <= set(ruff["lint"]["select"])
    assert "format" in ruff
    assert any(re.match(r"ruff\b", dep) for dep in doc["project"]["optional-dependencies"]["dev"])


def test_ci_lints_before_it_tests():
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert target, "no lint target"
    assert "ruff check ." in target.group(1) and "ruff format --check ." in target.group(1)
    assert "lint" in re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci.index("make lint") < ci.index("make test")
