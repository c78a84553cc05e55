"""`LightOptions` (select's options without pydantic): the lax coercions recipes and the CLI rely on."""

import pytest

from gptctl.errors import BadInput
from gptctl.options import OptionsInvalid, option_problems, parse_options
from gptctl.selection import SelectOptions


def test_lax_coercions_match_what_pydantic_accepted():
    o = SelectOptions.model_validate({"top": "3", "instruct": "true", "exportable": 1, "explain": "no",
                                      "max_params": 1e9, "license": "MIT", "metric": ["mmlu >= 40.0"]})
    assert o.top == 3 and o.instruct is True and o.exportable is True and o.explain is False
    assert o.max_params == 1_000_000_000 and o.license == ["mit"] and o.metric == ["mmlu>=40"]


def test_defaults_are_fresh_per_instance():
    a, b = SelectOptions(), SelectOptions()
    a.domain.append("medical")
    assert b.domain == [] and SelectOptions().weight == {}


@pytest.mark.parametrize("data, field, fragment", [
    ({"top": "three"}, "top", "expected an integer"),
    ({"top": True}, "top", "expected an integer"),
    ({"instruct": "maybe"}, "instruct", "expected true or false"),
    ({"task": 5}, "task", "expected a string"),
    ({"domain": [{"a": 1}]}, "domain", "expected a list of strings"),
    ({"weight": "quality"}, "weight", "not a weight"),
    ({"min_params": "2b", "max_params": "1b"}, "min_params", "no model can match"),
])
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
