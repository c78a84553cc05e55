"""`gptctl tune` on the real steps (select -> prune -> export) of a tiny Llama (tests/tiny_models.py).

Six trials over prune ratio x quantization, the recipe's gates as constraints: the trials pruned too
little stop after prune (before any export), the recipe as written is trial 0, prune runs once per
ratio (the other trials link the stored output), the objectives are the export manifest's own figures,
the front is re-timed, and a front recipe rerun by `gptctl run` gives the same perplexity.
"""

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptctl.cli.app import app
from gptctl.recipe import load_recipe

RECIPE = """\
name: tiny-tune
vars:
  notes: {notes}
steps:
  pick:
    kind: select
    options: {{max_params: 200m, license: [apache-2.0], instruct: true, exportable: true}}
    sources:
      HuggingFaceTB/SmolLM2-135M-Instruct: {model}
  prune:
    kind: optimize
    method: prune
    options: {{model: "${{steps.pick.model}}", ratio: 0.3, eval_data: "${{vars.notes}}", max_length: 32}}
  ship:
    kind: export
    options: {{quantize: int4, eval_data: "${{vars.notes}}", benchmark: true, provider: [cpu], decode_tokens: 4,
               prompt_lengths: [8], iterations: 3, warmup: 0, greedy_tokens: 2}}
gates:
  - steps.prune.metrics.sparsity_realised >= 0.25
  - steps.ship.validation.passed
  - steps.ship.metrics.ppl_quantized <= 1.5 * steps.ship.metrics.ppl_fp32
search:
  space:
    prune.options.ratio: [0.2, 0.3]
    ship.options.quantize: [int4, int8]
  objectives: {{ppl: min, decode_tok_s: max, size_mb: min}}
"""


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture
def study(tmp_path, tiny_llama, monkeypatch):
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("\n\n".join(["Take one tablet in the morning with water."] * 12))
    recipe = tmp_path / "tiny-tune.yaml"
    recipe.write_text(RECIPE.format(notes=notes, model=tiny_llama))
    out = tmp_path / "study"
    result = CliRunner().invoke(app, ["tune", str(recipe), "--trials", "6", "--output", str(out), "--json"])
    assert result.exit_code == 0, result.stderr + result.stdout
    return recipe, out, json.loads(result.stdout)


def test_real_study_on_a_tiny_llama(study, tmp_path):
    recipe, out, data = study
    trials = lines(out / "trials.jsonl")
    assert [t["number"] for t in trials] == list(range(6))

    # Trial 0 is the recipe as written: same steps, same options once pinned.
    assert trials[0]["baseline"] and trials[0]["params"] == {
        "prune.options.ratio": 0.3,
        "ship.options.quantize": "int4",
    }
    written, seeded = load_recipe(recipe), load_recipe(Path(trials[0]["recipe_file"]))
    assert [(s.name, s.kind, s.method, s.options) for s in seeded.steps] == [
        (s.name, s.kind, s.method, s.options) for s in written.steps
    ]

    # Constraints: a ratio below the sparsity gate stops after prune, never exported; the rest pass.
    for t in trials:
        if t["params"]["prune.options.ratio"] == 0.2:
            assert t["state"] == "stopped" and t["stopped_at"] == "prune" and "ship" not in t["durations"]
            assert t["constraints"]["gates[0]"] == pytest.approx((0.25 - 0.2) / 0.25, rel=0.05)
            assert not (out / "trials" / f"{t['number']:04d}" / "ship").exists()
        else:
            assert t["state"] == "complete" and t["feasible"], t
    assert {t["state"] for t in trials} == {"stopped", "complete"}  # both sides of the gate were tried
    assert data["front"] and all(p["params"]["prune.options.ratio"] == 0.3 for p in data["front"])

    # Cache reuse with the real runner: one prune per ratio for the whole study, one pick in all; every
    # trial's prune folder is a link to that one stored output.
    for ratio in {t["params"]["prune.options.ratio"] for t in trials}:
        same = [t for t in trials if t["params"]["prune.options.ratio"] == ratio]
        ran = [t for t in same if "prune" not in t["cache_hits"]]
        assert len(ran) == 1, [(t["number"], t["cache_hits"]) for t in same]
        targets = {(Path(t["workdir"]) / "prune").resolve() for t in same}
        assert len(targets) == 1 and (out / "cache") in next(iter(targets)).parents
    assert sum("pick" not in t["cache_hits"] for t in trials) == 1
    stored = [json.loads(p.read_text())["step"] for p in (out / "cache").glob("*/gptctl.json")]
    exported = {tuple(t["params"].values()) for t in trials if t["state"] == "complete"}
    assert stored.count("optimize") == len({t["params"]["prune.options.ratio"] for t in trials})
    assert stored.count("export") == len(exported) and stored.count("select") == 1

    # The objectives are the export manifest's own figures.
    for t in trials:
        if t["state"] != "complete":
            continue
        manifest = json.loads((Path(t["workdir"]) / "ship" / "gptctl.json").read_text())
        assert t["objectives"]["ppl"] == manifest["metrics"]["ppl_quantized"]
        assert t["objectives"]["size_mb"] == manifest["metrics"]["size_bytes"] / 2**20
        assert t["objectives"]["decode_tok_s"] == manifest["benchmark"]["cpu"]["decode_tokens_per_s"]

    # The front holds each set of values once (a repeated trial shares every output, so it ties).
    front = json.loads((out / "front.json").read_text())
    values = [json.dumps(p["params"], sort_keys=True) for p in front["front"]]
    assert len(values) == len(set(values))
    for p in front["front"]:
        assert p["repeats"] == [t["number"] for t in trials if t["params"] == p["params"] and t["number"] != p["trial"]]

    # The front re-timed at the end: one figure per point beside the in-study one, medians of 3 runs.
    for point in front["front"]:
        retimed = point["retimed"]
        assert len(retimed["decode_tok_s_runs"]) == 3, retimed
        assert retimed["decode_tok_s"] > 0 and math.isfinite(retimed["decode_tok_s"])
        assert point["objectives"]["decode_tok_s"] == next(
            t["objectives"]["decode_tok_s"] for t in trials if t["number"] == point["trial"]
        )
    assert front["baseline_retimed"]["decode_tok_s"] > 0  # the recipe as written, re-timed alike
    assert "re-timed" in (out / "report.html").read_text()

    # One front recipe, rerun from scratch by `gptctl run`, reproduces its perplexity within 1%.
    point = front["front"][0]
    rerun = CliRunner().invoke(
        app, ["run", point["recipe"], "--workdir", str(tmp_path / "rerun"), "--json", "--no-progress"]
    )
    assert rerun.exit_code == 0, rerun.stderr + rerun.stdout
    steps = {s["name"]: s for s in json.loads(rerun.stdout)["steps"]}
    assert {s["status"] for s in steps.values()} == {"ran"}
    ppl = steps["ship"]["metrics"]["ppl_quantized"]
    assert ppl == pytest.approx(point["objectives"]["ppl"], rel=0.01)
