"""`${...}` references and `--set` overrides."""

from pathlib import Path

import pytest

from gptctl.recipe import parse_recipe, run_recipe
from gptctl.recipe.refs import RefError, apply_override, find_refs, split_override, substitute

from recipe_fakes import FAKE_KINDS

RECIPE = """\
name: refs
vars:
  base: /data
  notes: ${vars.base}/notes.txt
  rank: 4
  home: ${env:HOME_DIR:-/home/none}
steps:
  pick:
    kind: select
    options: {max_params: 200m}
  tune:
    kind: optimize
    method: lora
    options:
      model: ${steps.pick.model}
      data: ${vars.notes}
      rank: ${vars.rank}
  ship:
    kind: export
    options:
      model: ${steps.tune.output}
      atol: ${steps.tune.metrics.train_tokens_per_s}
"""


def parse(overrides=None, env=None, text=RECIPE):
    return parse_recipe(text, "r.yaml", overrides, env=env or {}, kinds=FAKE_KINDS, recipe_dir=Path("/recipes"))


def test_vars_env_and_recipe_dir_resolve_before_running():
    r = parse(env={"HOME_DIR": "/home/me"})
    assert r.vars == {"base": "/data", "notes": "/data/notes.txt", "rank": 4, "home": "/home/me"}
    tune = r.step("tune").options
    assert tune["rank"] == 4  # a whole-value reference keeps the type
    assert tune["data"] == "/data/notes.txt"  # inside a string: formatted in
    assert tune["model"] == "${steps.pick.model}"  # step results wait for the run
    assert parse(text=RECIPE.replace("base: /data", "base: ${recipe.dir}")).vars["notes"] == "/recipes/notes.txt"
    # An env default may hold references itself.
    nested = RECIPE.replace("base: /data", "base: ${env:BASE:-${recipe.dir}/d}")
    assert parse(text=nested).vars["base"] == "/recipes/d"
    assert parse(text=nested, env={"BASE": "/b"}).vars["base"] == "/b"


def test_set_overrides_values_typed_as_yaml():
    r = parse(
        [
            "steps.tune.options.rank=16",
            "vars.base=/elsewhere",
            "steps.ship.options.quantize=int4",
            "steps.tune.options.alpha=0.5",
            "steps.ship.options.benchmark=false",
        ]
    )
    tune, ship = r.step("tune").options, r.step("ship").options
    assert tune["rank"] == 16 and tune["alpha"] == 0.5
    assert ship["quantize"] == "int4" and ship["benchmark"] is False
    # Variables are resolved after overrides, so an overridden var reaches every use of it.
    assert r.vars["notes"] == "/elsewhere/notes.txt" and tune["data"] == "/elsewhere/notes.txt"
    assert r.overrides[0] == "steps.tune.options.rank=16"


def test_set_can_replace_a_gate_and_a_step_method():
    text = RECIPE + "gates:\n  - steps.tune.metrics.ppl_after > 1000\n"
    r = parse(
        ["gates.0=steps.tune.metrics.ppl_after > 0", "steps.tune.method=prune", "steps.tune.options={ratio: 0.5}"],
        text=text,
    )
    assert r.gates == ["steps.tune.metrics.ppl_after > 0"]
    assert r.step("tune").method == "prune"
    assert r.step("tune").options == {"model": "${steps.pick.model}", "ratio": 0.5}


def test_split_override():
    assert split_override("steps.tune.options.rank=16") == (("steps", "tune", "options", "rank"), 16)
    assert split_override("vars.x=a=b") == (("vars", "x"), "a=b")
    assert split_override("vars.x=") == (("vars", "x"), None)
    assert split_override("vars.x=[1, 2]") == (("vars", "x"), [1, 2])
    assert split_override("gates.1=x > 1") == (("gates", 1), "x > 1")
    for bad in ("novalue", "=3", "a..b=1", "a=[1"):
        with pytest.raises(RefError):
            split_override(bad)


def test_apply_override_creates_mappings_and_refuses_scalars():
    data = {"steps": {"a": {"kind": "export"}}, "gates": ["x"]}
    apply_override(data, ("steps", "a", "options", "atol"), 0.1)
    assert data["steps"]["a"]["options"] == {"atol": 0.1}
    apply_override(data, ("gates", 1), "y")
    assert data["gates"] == ["x", "y"]
    with pytest.raises(RefError, match="not a mapping"):
        apply_override(data, ("steps", "a", "kind", "x"), 1)


def test_find_refs_and_substitute():
    refs = find_refs("${steps.a.output}/x-${vars.y}-${env:Z:-d}")
    assert [(r.root, r.parts, r.default) for r in refs] == [
        ("steps", ("a", "output"), None),
        ("vars", ("y",), None),
        ("env", ("Z",), "d"),
    ]
    assert refs[0].is_path and not refs[1].is_path
    values = {"${vars.n}": 3, "${vars.s}": "s", "${vars.b}": True}
    assert substitute({"a": ["${vars.n}", "n=${vars.n}, ${vars.b}"], "b": "${vars.s}"}, lambda r: values[r.text]) == {
        "a": [3, "n=3, true"],
        "b": "s",
    }


def test_step_references_resolve_at_run_time(tmp_path):
    report = run_recipe(parse(), tmp_path / "w", kinds=FAKE_KINDS)
    assert [s.status for s in report.steps] == ["ran", "ran", "ran"]
    tune, ship = report.steps[1], report.steps[2]
    assert tune.options["model"] == str(tmp_path / "w" / "pick" / "selection.json")  # select's model is its selection
    assert ship.options["model"] == str(tmp_path / "w" / "tune")
    assert ship.options["atol"] == 1000.0  # a number from tune's manifest, typed
    assert ship.manifest["options"]["atol"] == 1000.0


def test_dry_run_leaves_later_step_references_unresolved(tmp_path):
    report = run_recipe(parse(), tmp_path / "w", kinds=FAKE_KINDS, dry_run=True)
    assert [s.status for s in report.steps] == ["would-run"] * 3
    assert report.steps[2].options["atol"] == "${steps.tune.metrics.train_tokens_per_s}"
    assert report.exit_code == 0
    assert not (tmp_path / "w").exists()  # a dry run writes nothing


def test_a_reference_to_a_value_the_manifest_lacks_fails_that_step(tmp_path):
    r = parse(["steps.ship.options.atol=${steps.tune.metrics.nope}"])
    report = run_recipe(r, tmp_path / "w", kinds=FAKE_KINDS)
    assert [s.status for s in report.steps] == ["ran", "ran", "failed"]
    assert "steps.tune.metrics.nope: not in tune's manifest (it has: ppl_before, ppl_after" in report.steps[2].error
    assert report.exit_code == 2
