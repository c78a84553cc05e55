"""The recipe step kind `serve`: a canary of the service on an earlier step's artifact, its load-test figures
as metrics for gates. The export step is a stand-in that copies the session's tiny llama export."""

import json
import shutil

from serve_support import exported_llama

from gptctl.manifest import Manifest
from gptctl.options import LightOptions, option
from gptctl.outputs import atomic_output_dir
from gptctl.recipe import parse_recipe, run_recipe
from gptctl.recipe.steps import KINDS, StepKind

RECIPE = """
name: canary-demo
steps:
  ship:
    kind: export
    options: {model: MODEL}
  canary:
    kind: serve
    options: {model: "${steps.ship.model}", requests: 4, concurrency: 2, max_tokens: 5}
gates:
  - steps.canary.metrics.failed == 0
  - steps.canary.metrics.ok == 4
  - steps.canary.metrics.completion_tokens == 20
  - steps.canary.metrics.ttft_p50_ms <= steps.canary.metrics.ttft_p95_ms
  - steps.canary.metrics.exit_code == 0
"""


class CopyOptions(LightOptions):
    model: str = option("str", required=True)
    output: str = option("str", required=True)
    overwrite: bool = option("bool", False)


def _copy_export(run):
    with atomic_output_dir(run.output) as work:
        shutil.copytree(run.options.model, work, dirs_exist_ok=True)
        manifest = json.loads((work / "gptctl.json").read_text())
        Manifest(
            step="export", options={}, outputs=manifest["outputs"], extra={"validation": manifest["validation"]}
        ).write(work)
    return json.loads((run.output / "gptctl.json").read_text())


def test_a_serve_step_runs_a_canary_on_the_previous_steps_artifact(tmp_path_factory, tmp_path):
    artifact = exported_llama(tmp_path_factory)
    kinds = {**KINDS, "export": StepKind("export", lambda m: CopyOptions, _copy_export)}
    recipe = parse_recipe(RECIPE.replace("MODEL", str(artifact)), "canary.yaml", kinds=kinds, recipe_dir=tmp_path)
    report = run_recipe(recipe, tmp_path / "runs", kinds=kinds)
    assert report.error is None, report.error
    assert [g.passed for g in report.gates] == [True] * 5, report.gates
    manifest = json.loads((tmp_path / "runs" / "canary" / "gptctl.json").read_text())
    assert manifest["step"] == "serve" and manifest["metrics"]["tokens_per_s"] > 0
    assert manifest["inputs"]["model"]["path"] == str((tmp_path / "runs" / "ship").resolve())
    assert json.loads((tmp_path / "runs" / "canary" / "loadtest.json").read_text())["ok"] == 4


def test_serve_step_options_are_validated_before_running(tmp_path):
    from gptctl.errors import BadInput

    bad = RECIPE.replace("MODEL", str(tmp_path)).replace("concurrency: 2", "concurrency: 0")
    try:
        parse_recipe(bad, "canary.yaml", recipe_dir=tmp_path)
    except BadInput as exc:
        text = str(exc) + " ".join(exc.details or [])
        assert "concurrency" in text
    else:
        raise AssertionError("concurrency: 0 was accepted")
