"""Recipe validation: every problem at once, each with file:line and key path (one test per class)."""

import textwrap

import pytest

from gptctl.errors import BadInput
from gptctl.recipe import load_recipe, parse_recipe

from recipe_fakes import FAKE_KINDS

GOOD = """\
name: demo
vars:
  data: notes.txt
steps:
  pick:
    kind: select
    options: {max_params: 200m}
  tune:
    kind: optimize
    method: lora
    options:
      model: ${steps.pick.model}
      data: ${vars.data}
      rank: 8
  ship:
    kind: export
    options: {quantize: int4}
gates:
  - steps.tune.metrics.ppl_after <= 1.05 * steps.tune.metrics.ppl_before
"""


def problems(text, overrides=None, env=None):
    with pytest.raises(BadInput) as info:
        parse_recipe(textwrap.dedent(text), "r.yaml", overrides, env=env or {}, kinds=FAKE_KINDS)
    return info.value.details


def only(text, overrides=None, env=None):
    found = problems(text, overrides, env)
    assert len(found) == 1, found
    return found[0]


def test_a_good_recipe_validates():
    r = parse_recipe(GOOD, "r.yaml", env={}, kinds=FAKE_KINDS)
    assert [s.name for s in r.steps] == ["pick", "tune", "ship"]
    assert r.step("tune").options["data"] == "notes.txt"
    # An export without options.model takes the previous step's model.
    assert r.step("ship").options["model"] == "${steps.tune.model}"


def test_yaml_syntax_error_says_file_and_line():
    with pytest.raises(BadInput) as info:
        parse_recipe("name: x\nsteps: [a,\n", "r.yaml", kinds=FAKE_KINDS)
    assert info.value.message.startswith("r.yaml:")
    assert "not valid YAML" in info.value.message


def test_not_a_mapping():
    assert "a recipe is a mapping" in only("- just\n- a list\n")


def test_missing_name_and_steps():
    found = problems("description: nothing else\n")
    assert any("name: missing" in p for p in found)
    assert any("steps: missing" in p for p in found)


def test_bad_recipe_name():
    assert "name: '../x' is not a usable name" in only(GOOD.replace("name: demo", "name: ../x"))


def test_unknown_top_level_key_with_did_you_mean():
    p = only(GOOD + "gate: []\n")
    assert p.startswith("r.yaml:20: gate: unknown key 'gate' (did you mean 'gates'?)")


def test_duplicate_key():
    p = only(GOOD.replace("      rank: 8\n", "      rank: 8\n      rank: 16\n"))
    assert p.startswith("r.yaml:15: steps.tune.options.rank: this key appears twice")


def test_unknown_step_key_with_did_you_mean():
    p = only(GOOD.replace("    method: lora\n", "    method: lora\n    optoins: {}\n"))
    assert p.startswith("r.yaml:11: steps.tune.optoins: unknown key 'optoins' (did you mean 'options'?)")


def test_step_must_be_a_mapping_and_have_a_usable_name():
    found = problems(
        GOOD.replace(
            "  ship:\n    kind: export\n    options: {quantize: int4}\n", "  ship: export\n  bad-name: {kind: export}\n"
        )
    )
    assert any("steps.ship: a step is a mapping" in p for p in found)
    assert any("'bad-name' is not a usable step name" in p for p in found)


def test_unknown_kind_with_did_you_mean():
    p = only(GOOD.replace("kind: export", "kind: exprot"))
    assert p.startswith("r.yaml:16: steps.ship.kind: unknown kind 'exprot' (did you mean 'export'?)")


def test_missing_kind():
    assert "steps.ship.kind: missing" in only(GOOD.replace("    kind: export\n", ""))


def test_unknown_and_missing_method():
    assert "unknown method 'lroa' (did you mean 'lora'?); known: lora, prune" in only(
        GOOD.replace("method: lora", "method: lroa")
    )
    assert "steps.tune.method: missing" in only(GOOD.replace("    method: lora\n", ""))
    assert "a select step takes no method" in only(
        GOOD.replace("    kind: select\n", "    kind: select\n    method: lora\n")
    )


def test_unknown_option_with_did_you_mean():
    p = only(GOOD.replace("rank: 8", "rnak: 8"))
    assert p.startswith("r.yaml:14: steps.tune.options.rnak: unknown option 'rnak' (did you mean 'rank'?)")


def test_option_type_and_range():
    found = problems(GOOD.replace("rank: 8", "rank: 0").replace("quantize: int4", "quantize: int3"))
    assert any(p.startswith("r.yaml:14: steps.tune.options.rank:") and "greater than or equal to 1" in p for p in found)
    assert any(p.startswith("r.yaml:17: steps.ship.options.quantize:") and "int3" in p for p in found)
    assert "steps.tune.options.rank" in only(GOOD.replace("rank: 8", "rank: eight"))


def test_runner_owned_option():
    p = only(GOOD.replace("rank: 8", "rank: 8\n      output: elsewhere"))
    assert "steps.tune.options.output: 'output' is set by the runner" in p


def test_first_model_step_needs_a_model():
    text = "name: x\nsteps:\n  ship: {kind: export}\n"
    assert "steps.ship.options.model: missing" in only(text)


def test_reference_to_a_missing_step_with_did_you_mean():
    p = only(GOOD.replace("${steps.pick.model}", "${steps.pikc.model}"))
    assert p.startswith(
        "r.yaml:12: steps.tune.options.model: ${steps.pikc.model}: there is no step 'pikc' (did you mean 'pick'?)"
    )


def test_reference_to_a_later_step_or_itself():
    assert "step 'ship' runs later" in only(GOOD.replace("${steps.pick.model}", "${steps.ship.model}"))
    assert "cannot use its own results" in only(GOOD.replace("${steps.pick.model}", "${steps.tune.model}"))


def test_malformed_references():
    assert "unclosed" in only(GOOD.replace("${vars.data}", "${vars.data"))
    assert "a step has no 'modle' (did you mean 'model'?)" in only(
        GOOD.replace("${steps.pick.model}", "${steps.pick.modle}")
    )
    assert "say what to take from the step" in only(GOOD.replace("${steps.pick.model}", "${steps.pick}"))
    assert "unknown reference" in only(GOOD.replace("${vars.data}", "${var.data}"))


def test_undefined_variable_with_did_you_mean():
    p = only(GOOD.replace("${vars.data}", "${vars.dta}"))
    assert p.startswith("r.yaml:13: steps.tune.options.data: ${vars.dta}: vars has no 'dta' (did you mean 'data'?)")


def test_unset_environment_variable():
    text = GOOD.replace("data: notes.txt", "data: ${env:NOTES_FILE}")
    assert "environment variable NOTES_FILE is not set" in only(text)
    assert parse_recipe(text, kinds=FAKE_KINDS, env={"NOTES_FILE": "/x.txt"}).vars["data"] == "/x.txt"
    with_default = GOOD.replace("data: notes.txt", "data: ${env:NOTES_FILE:-fallback.txt}")
    assert parse_recipe(with_default, kinds=FAKE_KINDS, env={}).vars["data"] == "fallback.txt"


def test_step_results_not_allowed_in_vars():
    assert "step results cannot be used here" in only(GOOD.replace("data: notes.txt", "data: ${steps.pick.output}"))


def test_gate_syntax_error():
    p = only(GOOD.replace("1.05 * steps", "1.05 ** steps"))
    assert p.startswith("r.yaml:19: gates[0]: expected a number, a path or '('")
    assert "column" in p


def test_gate_refers_to_missing_step_or_root():
    found = problems(GOOD + "  - steps.shp.metrics.x > 1\n  - stesp.ship.metrics.x > 1\n  - steps.ship > 1\n  - 3\n")
    assert any("gates[1]: steps.shp.metrics.x: there is no step 'shp' (did you mean 'ship'?)" in p for p in found)
    assert any("gates[2]" in p and "did you mean 'steps'?" in p for p in found)
    assert any("gates[3]" in p and "say what to read" in p for p in found)
    assert any("gates[4]: a gate is an expression" in p for p in found)


def test_bad_override():
    assert "--set 'rank16': expected KEY.PATH=VALUE" in only(GOOD, ["rank16"])
    assert "steps.tune.method is a str, not a mapping" in only(GOOD, ["steps.tune.method.x=1"])


def test_problem_from_an_override_names_the_override():
    p = only(GOOD, ["steps.tune.options.rank=-3"])
    assert p.startswith("--set steps.tune.options.rank=-3: steps.tune.options.rank:")


def test_every_problem_is_reported_at_once():
    text = (
        GOOD.replace("rank: 8", "rnak: 8")
        .replace("kind: export", "kind: exprot")
        .replace("1.05 * steps", "1.05 ** steps")
    )
    found = problems(text, ["nokey"])
    assert len(found) == 4
    # In file order, the --set problems last.
    assert [p.split(":")[1] for p in found[:3]] == ["14", "16", "19"]
    assert found[-1].startswith("--set 'nokey'")


def test_missing_input_file_or_model():
    import dataclasses

    kinds = dict(FAKE_KINDS, optimize=dataclasses.replace(FAKE_KINDS["optimize"], path_options=("data",)))
    text = GOOD.replace("data: notes.txt", "data: /nonexistent/notes.txt").replace(
        "model: ${steps.pick.model}", "model: pkg:no_such_package_xyz/model.gguf"
    )
    with pytest.raises(BadInput) as info:
        parse_recipe(text, "r.yaml", env={}, kinds=kinds)
    found = info.value.details
    assert found[0].startswith(
        "r.yaml:12: steps.tune.options.model: the Python package 'no_such_package_xyz' is not installed"
    )
    assert "pip install --no-deps no-such-package-xyz" in found[0]
    assert found[1] == "r.yaml:13: steps.tune.options.data: /nonexistent/notes.txt: no such file"


def test_missing_file(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        load_recipe(tmp_path / "nope.yaml")
