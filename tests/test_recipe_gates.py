"""The gate expression language: tokenizer, parser, evaluator (no eval)."""

import pytest

from gptctl.recipe import gates

VALUES = {
    "steps.tune.metrics.ppl_before": 12.0,
    "steps.tune.metrics.ppl_after": 11.5,
    "steps.ship.validation.passed": True,
    "steps.ship.validation.max_abs_diff": 4e-4,
    "steps.ship.benchmark.cuda.available": False,
    "steps.pick.metrics.model": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def lookup(path):
    if path in VALUES:
        return VALUES[path]
    raise KeyError(f"{path}: not in the manifest")


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("steps.tune.metrics.ppl_after <= 1.05 * steps.tune.metrics.ppl_before", True),
        ("steps.ship.validation.max_abs_diff <= 1e-3", True),
        ("steps.ship.validation.max_abs_diff < 1E-4", False),
        ("1 + 2 * 3 == 7", True),  # precedence
        ("(1 + 2) * 3 == 9", True),
        ("10 - 4 - 3 == 3", True),  # left associative
        ("12 / 4 / 3 == 1", True),
        ("-2 * -3 == 6", True),
        ("not 1 > 2", True),
        ("1 < 2 and 2 < 3 or false", True),
        ("false or 1 < 2 and false", False),  # and binds tighter than or
        ("steps.ship.validation.passed and not steps.ship.benchmark.cuda.available", True),
        ("abs(1 - 3) == 2 and min(4, 2, 3) == 2 and max(1, 5) >= 5", True),
        ("steps.pick.metrics.model == 'HuggingFaceTB/SmolLM2-135M-Instruct'", True),
        ('steps.pick.metrics.model != "x"', True),
        (".5 < 1.", True),
    ],
)
def test_expressions_evaluate(expr, expected):
    result = gates.evaluate(expr, lookup)
    assert result.error is None
    assert result.passed is expected


def test_values_and_both_sides_are_shown():
    r = gates.evaluate("steps.tune.metrics.ppl_after <= 1.05 * steps.tune.metrics.ppl_before", lookup)
    assert r.values == {"steps.tune.metrics.ppl_after": 11.5, "steps.tune.metrics.ppl_before": 12.0}
    assert r.detail == "11.5 <= 12.6"
    assert r.to_dict()["passed"] is True


def test_or_short_circuits_so_a_guard_skips_missing_values():
    expr = "not steps.ship.benchmark.cuda.available or steps.ship.benchmark.cuda.decode_tokens_per_s >= 100"
    r = gates.evaluate(expr, lookup)
    assert r.passed and r.error is None
    assert "steps.ship.benchmark.cuda.decode_tokens_per_s" not in r.values


@pytest.mark.parametrize(
    "expr, message",
    [
        ("steps.ship.benchmark.cuda.decode_tokens_per_s > 1", "not in the manifest"),
        ("1 / 0 > 1", "division by zero"),
        ("steps.tune.metrics.ppl_after", "not true/false"),
        ("steps.pick.metrics.model > 3", "needs numbers"),
        ("1 and true", "needs true/false"),
    ],
)
def test_evaluation_errors_fail_the_gate_with_a_reason(expr, message):
    r = gates.evaluate(expr, lookup)
    assert r.passed is False
    assert message in r.error


@pytest.mark.parametrize(
    "expr, message",
    [
        ("", "empty expression"),
        ("(1 < 2", "expected ')'"),
        ("1 <", "expected a number"),
        ("1 < 2 < 3", "chained comparisons"),
        ("1 ** 2 > 0", "expected a number"),
        ("__import__('os') > 0", "unknown function '__import__'"),
        ("__import__('os').system('true')", "unexpected character '.'"),
        ("steps.x; 1", "unexpected character ';'"),
        ("a[0] > 1", "unexpected character '['"),
        ("1 > 0 1", "unexpected '1'"),
    ],
)
def test_syntax_errors_are_reported_with_a_position(expr, message):
    with pytest.raises(gates.GateSyntaxError) as info:
        gates.parse(expr)
    assert message in str(info.value)
    assert 0 <= info.value.position <= len(expr)


def test_paths_lists_every_path_read():
    tree = gates.parse("a.b + max(c.d, 2) > 1 and not e.f")
    assert gates.paths(tree) == ["a.b", "c.d", "e.f"]


def test_tokenizer_keeps_positions():
    toks = gates.tokenize("steps.a.b >= 1e-3")
    assert [(t.kind, t.text, t.pos) for t in toks] == [
        ("path", "steps.a.b", 0),
        ("op", ">=", 10),
        ("number", "1e-3", 13),
        ("end", "", 17),
    ]
