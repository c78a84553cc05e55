"""The README's console examples run as printed, with the venv's gptctl, each in a subprocess.

Every ```console block in README.md is preceded by one marker line:

    <!-- runnable -->                 runs anywhere (no model, no demo output): always part of `make test`
    <!-- runnable: after-demo -->     needs what `make demo` leaves (runs/quickstart/, recipes/data/):
                                      part of `make test`, in a folder laid out like the repository's
                                      after the demo, where runs/quickstart/ is the quickstart recipe
                                      run on a tiny model (same steps, same folders, seconds not minutes)
    <!-- runnable: after-demo slow --> the same, but only with the tests marked slow
    <!-- not runnable: WHY -->        never run (installs, the real pipeline, a GPU-dependent exit code)

In a runnable block, `$ ` starts a command (a trailing `\\` continues it); a comment that says
`exit N` is the exit code expected (default 0); a command with `--json` must print one JSON document.
After-demo commands of a kind run in README order in one folder, so one may use another's output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_recipe_e2e import QUICKSTART_CI  # the suite's trimmed quickstart: the same overrides here

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RECIPES = ROOT / "recipes"
VENV_BIN = Path(sys.executable).parent  # `make test` runs .venv/bin/pytest: gptctl is beside it

MARK = re.compile(r"^<!-- (?:runnable(?::\s*(?P<tags>[a-z -]*?))?|not runnable: (?P<why>\S.*?)) -->$")
TAGS = {"", "after-demo", "after-demo slow"}
EXPECTED_EXIT = re.compile(r"#.*\bexit (\d+)\b")
# Measured on a 2-core VM under load: `select` 0.3-1 s, a tiny-model optimize or export 9-30 s.
LIGHT_TIMEOUT_S = 60
HEAVY_TIMEOUT_S = 300

# The quickstart recipe on the tiny Llama instead of SmolLM2: `pick` still selects SmolLM2-135M-Instruct
# from the catalog, by constraints, and its weights come from the tiny model's folder.
TINY_DEMO = [
    *QUICKSTART_CI,
    "--set",
    "steps.ship.options.prompt_lengths=[8]",
    "--set",
    "steps.ship.options.iterations=1",
    "--set",
    "steps.ship.options.warmup=0",
]


@dataclass(frozen=True)
class Example:
    line: int  # where the command starts in README.md
    command: str  # as printed, continuation lines joined
    tags: str  # "" | "after-demo" | "after-demo slow"

    @property
    def expected_exit(self) -> int:
        m = EXPECTED_EXIT.search(self.command)
        return int(m.group(1)) if m else 0


def parse_readme(text: str) -> tuple[list[Example], list[str]]:
    """The runnable examples, and every problem with the markers (an unmarked block, a marker on no block)."""
    lines = text.splitlines()
    examples: list[Example] = []
    problems: list[str] = []
    marker = None
    for i, line in enumerate(lines):
        m = MARK.match(line.strip())
        if m:
            marker = (i, m)
            continue
        if line.strip() != "```console":
            if marker and line.strip():
                problems.append(f"README.md:{marker[0] + 1}: marker not followed by a ```console block")
                marker = None
            continue
        if marker is None:
            problems.append(f"README.md:{i + 1}: ```console block without a <!-- runnable... --> marker")
        elif marker[1].group("why") is None:
            tags = marker[1].group("tags") or ""
            if tags not in TAGS:
                problems.append(f"README.md:{marker[0] + 1}: unknown marker tags {tags!r}; known: {sorted(TAGS)}")
            examples += _commands(lines, i + 1, tags)
        marker = None
    return examples, problems


def _commands(lines: list[str], start: int, tags: str) -> list[Example]:
    found: list[Example] = []
    i = start
    while i < len(lines) and lines[i].strip() != "```":
        if lines[i].startswith("$ "):
            first, parts = i, [lines[i][2:]]
            while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                parts.append(lines[i])
            found.append(Example(first + 1, "\n".join(parts), tags))
        i += 1
    return found


EXAMPLES, MARK_PROBLEMS = parse_readme(README.read_text(encoding="utf-8"))
ALWAYS = [e for e in EXAMPLES if e.tags == ""]
AFTER_DEMO = [e for e in EXAMPLES if e.tags.startswith("after-demo")]


def example_id(e: Example) -> str:
    words = re.sub(r"[^A-Za-z0-9 ]+", " ", e.command.split("#")[0]).split()
    return f"L{e.line}-" + "-".join(words[1:4])


def run_example(e: Example, cwd: Path, timeout_s: int) -> str:
    """Run one example in `cwd` as a shell would; return a failure message, or '' when it behaved."""
    gptctl = VENV_BIN / "gptctl"
    assert gptctl.is_file(), f"{gptctl} is missing: run the tests with the venv's pytest (make test)"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    env.pop("GPTCTL_CATALOG", None)  # the README's figures are the bundled catalog's
    try:
        r = subprocess.run(
            ["bash", "-c", e.command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return f"README.md:{e.line}: over {timeout_s}s: {e.command}"
    where = f"README.md:{e.line}: {e.command}\n  exit {r.returncode}"
    if r.returncode != e.expected_exit:
        return f"{where}, expected {e.expected_exit}\n  stderr: {r.stderr[-2000:]}"
    code = e.command.split(" #")[0]  # the comment may name flags too
    if "--json" in code.split() and ">" not in code:
        try:
            json.loads(r.stdout)
        except ValueError as err:
            return f"{where}: --json printed no single JSON document ({err}): {r.stdout[:300]!r}"
    return ""


def paste_folder(root: Path, demo_runs: Path | None = None) -> Path:
    """A fresh folder laid out as the repository: recipes/ and, after the demo, runs/quickstart/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipes").symlink_to(RECIPES, target_is_directory=True)
    if demo_runs is not None:
        (root / "runs").mkdir()
        (root / "runs" / "quickstart").symlink_to(demo_runs, target_is_directory=True)
    return root


# ------------------------------------------------------------------------------------------- markers


def test_every_console_block_is_marked_and_the_marks_find_examples():
    assert not MARK_PROBLEMS, "\n".join(MARK_PROBLEMS)
    assert len(ALWAYS) >= 5 and len(AFTER_DEMO) >= 5, (len(ALWAYS), len(AFTER_DEMO))
    assert any(e.tags == "after-demo" for e in EXAMPLES), "some after-demo examples must run in make test"
    assert all(e.command.startswith("gptctl ") for e in EXAMPLES), [e.command for e in EXAMPLES]


def test_the_parser_reads_markers_continuations_and_exit_codes():
    text = "\n".join(
        [
            "<!-- runnable -->",
            "```console",
            "$ gptctl a \\",
            "    --b  # exit 1",
            "output line",
            "```",
            "",
            "<!-- not runnable: needs a GPU -->",
            "```console",
            "$ gptctl c",
            "```",
            "",
            "```console",
            "$ gptctl d",
            "```",
            "",
            "<!-- runnable: after-demo slow -->",
            "```console",
            "# a comment",
            "$ gptctl e",
            "```",
            "",
            "<!-- runnable: later -->",
            "```console",
            "```",
        ]
    )
    examples, problems = parse_readme(text)
    assert [(e.line, e.command, e.tags, e.expected_exit) for e in examples] == [
        (3, "gptctl a \\\n    --b  # exit 1", "", 1),
        (20, "gptctl e", "after-demo slow", 0),
    ]
    assert problems == [
        "README.md:13: ```console block without a <!-- runnable... --> marker",
        "README.md:23: unknown marker tags 'later'; known: ['', 'after-demo', 'after-demo slow']",
    ]


# ---------------------------------------------------------------------------------- always runnable


@pytest.mark.parametrize("example", ALWAYS, ids=example_id)
def test_runnable_example(example, tmp_path):
    failure = run_example(example, paste_folder(tmp_path / "repo"), LIGHT_TIMEOUT_S)
    assert not failure, failure


# ------------------------------------------------------------------------------ after `make demo`


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory, tiny_llama):
    """runs/quickstart/ as `make demo` leaves it: the quickstart recipe, trimmed, on the tiny Llama."""
    from typer.testing import CliRunner

    from gptctl.cli.app import app

    workdir = tmp_path_factory.mktemp("demo") / "quickstart"
    sources = f"steps.pick.sources={{HuggingFaceTB/SmolLM2-135M-Instruct: {tiny_llama}}}"
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(RECIPES / "quickstart.yaml"),
            "--workdir",
            str(workdir),
            "--no-progress",
            "--json",
            "--set",
            sources,
            *TINY_DEMO,
        ],
    )
    data = json.loads(result.stdout) if result.stdout.strip() else {}
    # Gates read SmolLM2's figures and may fail on random weights (exit 1); every folder must be there.
    statuses = [s.get("status") for s in data.get("steps", [])]
    assert statuses and set(statuses) == {"ran"}, result.stderr[-3000:]
    for step in ("pick/selection.json", "tune/merged/gptctl.json", "prune/gptctl.json", "ship/model.onnx"):
        assert (workdir / step).is_file(), step
    return workdir


def _run_in_order(examples: list[Example], cwd: Path) -> None:
    failures = [f for f in (run_example(e, cwd, HEAVY_TIMEOUT_S) for e in examples) if f]
    assert not failures, "\n\n".join(failures)


def test_after_demo_examples(demo_runs, tmp_path):
    fast = [e for e in AFTER_DEMO if e.tags == "after-demo"]
    _run_in_order(fast, paste_folder(tmp_path / "repo", demo_runs))


@pytest.mark.slow
def test_every_after_demo_example(demo_runs, tmp_path):
    _run_in_order(AFTER_DEMO, paste_folder(tmp_path / "repo", demo_runs))


# ---------------------------------------------------------------------- claims that are not examples


def test_select_top_cuts_json_and_output_alike(tmp_path):
    # README: "--top N cuts the ranking itself: the table, --json and --output all hold those N".
    r = subprocess.run(
        [
            str(VENV_BIN / "gptctl"),
            "select",
            "--license",
            "apache-2.0",
            "--top",
            "2",
            "--json",
            "--output",
            str(tmp_path / "sel.json"),
        ],
        capture_output=True,
        text=True,
        timeout=LIGHT_TIMEOUT_S,
    )
    assert r.returncode == 0, r.stderr
    shown, saved = json.loads(r.stdout), json.loads((tmp_path / "sel.json").read_text())
    assert len(shown["models"]) == len(saved["models"]) == shown["top"] == 2 < shown["matched"]


def _make_venv_dry_run(tmp_path: Path, *args: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    r = subprocess.run(
        ["make", "-n", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}", "venv", *args],
        capture_output=True,
        text=True,
        timeout=LIGHT_TIMEOUT_S,
    )
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if "pip install" in line and " torch==" in line]


def test_make_installs_torch_from_the_readmes_cpu_index_only_when_asked(tmp_path):
    pin = re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    index = re.search(r"make demo TORCH_INDEX=(\S+)", README.read_text(encoding="utf-8")).group(1)
    (plain,) = _make_venv_dry_run(tmp_path)
    assert "--index-url" not in plain and plain.endswith(f" torch=={pin}")
    (cpu,) = _make_venv_dry_run(tmp_path, f"TORCH_INDEX={index}")
    assert cpu.endswith(f"--index-url {index} torch=={pin}"), cpu
