"""`LightOptions` (select's options without pydantic): the lax coercions recipes and the CLI rely on."""

import pytest

from gptctl.errors import BadInput
from gptctl.options import OptionsInvalid, option_problems, parse_options
from gptctl.selection import SelectOptions


def test_lax_coercions_match_what_pydantic_accepted():
    o = SelectOptions.model_validate(
        {
            "top": "3",
            "instruct": "true",
            "exportable": 1,
            "explain": "no",
            "max_params": 1e9,
            "license": "MIT",
            "metric": ["mmlu >= 40.0"],
        }
    )
    assert o.top == 3 and o.instruct is True and o.exportable is True and o.explain is False
    assert o.max_params == 1_000_000_000 and o.license == ["mit"] and o.metric == ["mmlu>=40"]


def test_defaults_are_fresh_per_instance():
    a, b = SelectOptions(), SelectOptions()
    a.domain.append("medical")
    assert b.domain == [] and SelectOptions().weight == {}


@pytest.mark.parametrize(
    "data, field, fragment",
    [
        ({"top": "three"}, "top", "expected an integer"),
        ({"top": True}, "top", "expected an integer"),
        ({"instruct": "maybe"}, "instruct", "expected true or false"),
        ({"task": 5}, "task", "expected a string"),
        ({"domain": [{"a": 1}]}, "domain", "expected a list of strings"),
        ({"weight": "quality"}, "weight", "not a weight"),
        ({"min_params": "2b", "max_params": "1b"}, "min_params", "no model can match"),
    ],
)
def test_each_problem_names_its_field(data, field, fragment):
    inst, problems = option_problems(SelectOptions, data)
    assert inst is None
    assert [p for p, _ in problems] == [(field,)], problems
    assert fragment in problems[0][1]


def test_every_problem_at_once_and_unknown_keys():
    with pytest.raises(OptionsInvalid) as exc:
        SelectOptions.model_validate({"domian": ["medical"], "top": 0, "language": "english!"})
    fields = {p for p, _ in exc.value.problems}
    assert fields == {("domian",), ("top",), ("language",)}
    assert "did you mean 'domain'" in dict(exc.value.problems)[("domian",)]


def test_parse_options_raises_bad_input_and_direct_construction_too():
    with pytest.raises(BadInput, match="top"):
        parse_options(SelectOptions, {"top": 0})
    with pytest.raises(BadInput, match="unknown domain"):
        SelectOptions(domain=["medcal"])


def test_model_dump_and_equality():
    o = SelectOptions(domain="medical", weight={"quality": 1})
    d = o.model_dump(mode="json")
    assert d["domain"] == ["medical"] and d["weight"] == {"quality": 1.0}
    d["domain"].append("x")  # a copy: the options are not changed through it
    assert o.domain == ["medical"]
    assert SelectOptions.model_validate(o.model_dump()) == o
    assert "domain" in SelectOptions.model_fields and SelectOptions.model_fields["domain"]


def test_model_fields_are_known_before_any_validation():
    import subprocess
    import sys

    code = "from gptctl.selection import SelectOptions; print(sorted(SelectOptions.model_fields))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "domain" in out and "max_params" in out


# ------------------------------------------------------------------ the kinds export/optimize/bench declare


def test_floats_choices_bounds_and_split_lists():
    from gptctl.export.options import ExportOptions

    o = ExportOptions.model_validate(
        {
            "model": "m",
            "output": "o",
            "atol": "1e-4",
            "head_bits": "4",
            "quantize": "int4",
            "prompt_lengths": ["8,16", 32],
            "provider": "cpu",
        }
    )
    assert o.atol == 1e-4 and o.head_bits == 4 and o.prompt_lengths == [8, 16, 32] and o.provider == ["cpu"]
    _, problems = option_problems(
        ExportOptions,
        {"model": "m", "output": "o", "atol": 0, "dtype": "fp8", "prompt_lengths": "8,0", "opset": 9, "block_size": 48},
    )
    found = dict(((p[0], m) for p, m in problems))
    assert "greater than 0" in found["atol"] and "'fp32' or 'fp16'" in found["dtype"]
    assert "greater than or equal to 1" in found["prompt_lengths"]
    assert "greater than or equal to 14 and less than or equal to 23" in found["opset"]
    assert "power of two" in found["block_size"]


def test_required_fields_and_cross_field_checks_run_after_the_fields():
    from gptctl.optimize.options import PruneOptions
    from gptctl.options import MISSING

    _, problems = option_problems(PruneOptions, {"ratio": 0.3})
    assert problems == [(("model",), MISSING), (("output",), MISSING)]
    # The base class's check (eval source) runs before the subclass's (ratio vs structure).
    _, problems = option_problems(PruneOptions, {"model": "m", "output": "o", "eval_data": "e", "eval_split": 0.1})
    assert problems == [((), "pass either --eval-data or --eval-split, not both")]
    _, problems = option_problems(PruneOptions, {"model": "m", "output": "o"})
    assert problems == [((), "--ratio is required for unstructured pruning (e.g. --ratio 0.3)")]


def test_dump_excludes_and_round_trips_for_the_converted_classes():
    from gptctl.optimize.options import LoraOptions

    o = LoraOptions(model="m", output="o", data="d", target_modules="q_proj,v_proj", lr="1e-3")
    d = o.model_dump(mode="json", exclude={"output"})
    assert "output" not in d and d["target_modules"] == ["q_proj", "v_proj"] and d["lr"] == 1e-3
    assert LoraOptions.model_validate(o.model_dump()) == o
    assert LoraOptions.model_fields["rank"].ge == 1 and LoraOptions.model_fields["rank"].default == 8
