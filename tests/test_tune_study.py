"""`gptctl tune` on stand-in steps (tests/recipe_fakes.py): a study of 6 trials in a second or two.

The fakes derive every output and metric from their options and input content, so what is checked is
the study's own behaviour: the seeded trial, constraints from gates, early stops, step outputs shared
between trials, pinned front recipes that rerun to the same figures, nearest misses when nothing passes.
"""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptctl.cli.app import app

import recipe_fakes

RECIPE = """\
name: demo
steps:
  pick:
    kind: select
    options: {max_params: 200m}
  tune:
    kind: optimize
    method: lora
    options: {model: "${steps.pick.model}", rank: 8}
  prune:
    kind: optimize
    method: prune
    options: {ratio: 0.3}
  ship:
    kind: export
    options: {quantize: int4}
gates:
  - steps.prune.metrics.sparsity_realised >= MIN_SPARSITY
  - steps.ship.validation.max_abs_diff <= 1e-3
search:
  space:
    prune.options.ratio: [0.1, 0.3, 0.5]
    ship.options.quantize: [int4, int8]
  objectives:
    ppl: min
    steps.prune.metrics.sparsity_realised: max
"""


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    recipe_fakes.install(monkeypatch)
    monkeypatch.chdir(tmp_path)

    def write(text=RECIPE, min_sparsity=0.2):
        path = tmp_path / "demo.yaml"
        path.write_text(text.replace("MIN_SPARSITY", str(min_sparsity)))
        return path

    return write


def tune(*args):
    return CliRunner().invoke(app, ["tune", *map(str, args)])


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_study_respects_gates_seeds_the_recipe_and_shares_steps(recipe, tmp_path):
    result = tune(recipe(), "--trials", 6, "--sampler", "random", "--output", tmp_path / "study", "--json")
    assert result.exit_code == 0, result.stderr + result.stdout
    data = json.loads(result.stdout)
    trials = lines(tmp_path / "study/trials.jsonl")
    assert len(trials) == 6 == len(data["trials"])
    # Trial 0 is the recipe as written.
    assert trials[0]["baseline"] and trials[0]["params"] == {
        "prune.options.ratio": 0.3,
        "ship.options.quantize": "int4",
    }
    assert sum(t["baseline"] for t in trials) == 1
    for t in trials:
        ratio = t["params"]["prune.options.ratio"]
        if ratio < 0.2:  # the sparsity gate fails once prune is done: stopped before the export
            assert t["state"] == "stopped" and t["stopped_at"] == "prune" and "ship" not in t["durations"]
            assert t["constraints"]["gates[0]"] == pytest.approx((0.2 - ratio) / 0.2)
        else:
            assert t["state"] == "complete" and t["feasible"]
            assert t["constraints"]["gates[0]"] <= 0
    # The front holds feasible trials only, each with a pinned recipe.
    assert data["front"]
    for point in data["front"]:
        assert point["params"]["prune.options.ratio"] >= 0.2
        assert "search" not in Path(point["recipe"]).read_text()
    # Shared steps ran once per distinct input: pick and tune once for the whole study, prune once per ratio,
    # ship once per (ratio, quantize) that got past the gate.
    calls = recipe_fakes.CALLS
    assert calls.count("pick") == 1 and calls.count("tune") == 1
    assert calls.count("prune") == len({t["params"]["prune.options.ratio"] for t in trials})
    shipped = {tuple(t["params"].values()) for t in trials if t["state"] == "complete"}
    assert calls.count("ship") == len(shipped)
    assert all("tune" in t["cache_hits"] for t in trials[1:])
    html = (tmp_path / "study/report.html").read_text()
    assert "Pareto front" in html and "plotly" in html.lower() and 'src="https://cdn' not in html
    front = json.loads((tmp_path / "study/front.json").read_text())
    assert front["machine"]["cores"] and "flags" in front["machine"]


def test_front_recipes_rerun_to_the_same_figures(recipe, tmp_path):
    result = tune(recipe(), "--trials", 6, "--sampler", "random", "--output", tmp_path / "study", "--json")
    assert result.exit_code == 0, result.stderr
    for point in json.loads(result.stdout)["front"]:
        rerun = CliRunner().invoke(
            app,
            ["run", point["recipe"], "--workdir", str(tmp_path / f"rerun{point['index']}"), "--json", "--no-progress"],
        )
        assert rerun.exit_code == 0, rerun.stderr
        steps = {s["name"]: s for s in json.loads(rerun.stdout)["steps"]}
        assert set(s["status"] for s in steps.values()) == {"ran"}  # a fresh workdir: really rerun
        assert steps["ship"]["metrics"]["ppl_quantized"] == point["objectives"]["ppl"]
        sparsity = point["objectives"]["steps.prune.metrics.sparsity_realised"]
        assert steps["prune"]["metrics"]["sparsity_realised"] == sparsity


def test_no_feasible_trial_lists_nearest_misses_and_exits_1(recipe, tmp_path):
    result = tune(recipe(min_sparsity=0.9), "--trials", 4, "--sampler", "random", "--output", tmp_path / "s", "--json")
    assert result.exit_code == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["front"] == [] and "no trial passed every gate" in data["error"]
    misses = data["nearest_misses"]
    assert misses and [m["violation"] for m in misses] == sorted(m["violation"] for m in misses)
    for m in misses:
        (failed,) = m["failed"]
        assert failed["gate"].startswith("steps.prune.metrics.sparsity_realised >= 0.9")
        assert failed["by"] == pytest.approx((0.9 - m["params"]["prune.options.ratio"]) / 0.9, abs=1e-6)
    assert "ship" not in recipe_fakes.CALLS  # every trial stopped at prune
    assert "nearest misses" in (tmp_path / "s/report.html").read_text()
    table = tune(recipe(min_sparsity=0.9), "--trials", 5, "--output", tmp_path / "s", "--resume")
    assert table.exit_code == 1 and "nearest misses" in table.stdout


def test_existing_study_needs_resume(recipe, tmp_path):
    assert tune(recipe(), "--trials", 1, "--output", tmp_path / "s").exit_code == 0
    again = tune(recipe(), "--trials", 2, "--output", tmp_path / "s")
    assert again.exit_code == 2 and "--resume" in again.stderr


def test_bad_search_block_exits_2_naming_the_line(recipe):
    text = RECIPE.replace("prune.options.ratio: [0.1", "prune.options.ratoi: [0.1").replace("ppl: min", "ppx: min")
    result = tune(recipe(text), "--dry-run")
    assert result.exit_code == 2
    lines_ = text.splitlines()
    ratoi = next(i for i, x in enumerate(lines_, 1) if "ratoi" in x)
    ppx = next(i for i, x in enumerate(lines_, 1) if "ppx" in x)
    assert f"demo.yaml:{ratoi}: search.space.prune.options.ratoi: step prune has no option 'ratoi'" in result.stderr
    assert "did you mean 'ratio'" in result.stderr
    assert f"demo.yaml:{ppx}: search.objectives.ppx: unknown objective 'ppx' (did you mean 'ppl'?)" in result.stderr
    assert recipe_fakes.CALLS == []


@pytest.mark.parametrize(
    "space, message",
    [
        ("prune.options.ratio: {float: [0.1, 1.5]}", "1.5 is not a valid prune.options.ratio"),
        ("prune.options.ratio: {float: [0.1, 0.5], step: 0.15}", "does not divide"),
        ("ship.options.quantize: [int4, int3]", "'int3' is not a valid ship.options.quantize"),
        ("nope.options.ratio: [0.1]", "there is no step 'nope'"),
        (
            "ship.options.atol: {choices: [0.1], when: \"ship.options.quantise == 'int4'\"}",
            "not an option of the recipe",
        ),
        ("tune.options.rank: {int: [4, 32], log: true, step: 2}", "a log range needs"),
    ],
)
def test_bad_spaces_are_refused(recipe, space, message):
    line = (
        "    prune.options.ratio: [0.1, 0.3, 0.5]\n"
        if space.startswith("prune")
        else "    ship.options.quantize: [int4, int8]\n"
    )
    result = tune(recipe(RECIPE.replace(line, "    " + space + "\n")), "--dry-run")
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_dry_run_prints_the_space_and_its_size(recipe):
    space = """\
    prune.options.ratio: {float: [0.1, 0.5], step: 0.05}
    ship.options.quantize: [int4, int8]
    ship.options.atol: {choices: [1.0e-3, 1.0e-2, 1.0e-1], when: "ship.options.quantize == 'int4'"}
    tune.options.rank: {int: [4, 32], log: true}
"""
    text = RECIPE.replace("    prune.options.ratio: [0.1, 0.3, 0.5]\n    ship.options.quantize: [int4, int8]\n", space)
    result = tune(recipe(text), "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    # 9 ratios x (int4 with 3 atols + int8 with the recipe's atol) x 29 ranks
    assert data["size"] == 9 * (3 + 1) * (32 - 4 + 1)
    assert recipe_fakes.CALLS == []
    plain = tune(recipe(text.replace("step: 0.05", "log: true")), "--dry-run")
    assert plain.exit_code == 0 and "size: unbounded" in plain.stdout


def test_conditional_parameter_is_sampled_only_where_it_applies(recipe, tmp_path):
    text = RECIPE.replace(
        "    ship.options.quantize: [int4, int8]\n",
        "    ship.options.quantize: [int4, int8]\n"
        "    ship.options.atol: {choices: [1.0e-3, 1.0e-4], when: \"ship.options.quantize == 'int4'\"}\n",
    )
    result = tune(recipe(text), "--trials", 6, "--sampler", "random", "--output", tmp_path / "s", "--json")
    assert result.exit_code == 0, result.stderr
    for t in json.loads(result.stdout)["trials"]:
        assert ("ship.options.atol" in t["params"]) == (t["params"]["ship.options.quantize"] == "int4")


def test_gptctl_run_ignores_the_search_block(recipe, tmp_path):
    result = CliRunner().invoke(app, ["run", str(recipe()), "--no-progress", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.stderr
    assert "search: block is for `gptctl tune`" in result.stderr


def test_ray_flags_need_the_ray_backend(recipe):
    result = tune(recipe(), "--cpus-per-trial", 2, "--dry-run")
    assert result.exit_code == 2 and "add --backend ray" in result.stderr
    assert recipe_fakes.CALLS == []


def test_no_retime_leaves_the_in_study_figures_alone(recipe, tmp_path):
    # The stand-in export writes no model.onnx: re-timing says so instead of failing the study.
    on = tune(recipe(), "--trials", 2, "--output", tmp_path / "on", "--json")
    assert on.exit_code == 0, on.stderr
    assert all(
        p["retimed"] == {"skipped": "no exported model.onnx to benchmark"} for p in json.loads(on.stdout)["front"]
    )
    off = tune(recipe(), "--trials", 2, "--output", tmp_path / "off", "--json", "--no-retime")
    assert off.exit_code == 0, off.stderr
    assert all("retimed" not in p for p in json.loads(off.stdout)["front"])


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp", "grid"])
def test_every_sampler_runs_a_study_with_the_gates_as_constraints(recipe, tmp_path, sampler):
    # 4 trials: trial 0 is the recipe, the rest are the sampler's (gp and nsga2 start from random ones)
    result = tune(recipe(), "--trials", 4, "--sampler", sampler, "--output", tmp_path / "s", "--json")
    assert result.exit_code == 0, result.stderr + result.stdout
    trials = lines(tmp_path / "s/trials.jsonl")
    assert len(trials) == 4 and trials[0]["baseline"]
    for t in trials:
        feasible = t["params"]["prune.options.ratio"] >= 0.2
        assert t["constraints"]["gates[0]"] <= 0 if feasible else t["constraints"]["gates[0]"] > 0
    assert all(p["params"]["prune.options.ratio"] >= 0.2 for p in json.loads(result.stdout)["front"])
