"""The parameter-count unit parser: examples, refusals, and hypothesis properties."""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptctl.catalog.units import format_context, format_params, parse_context, parse_params


@pytest.mark.parametrize(
    "text, expected",
    [
        ("135m", 135_000_000),
        ("135M", 135_000_000),
        ("1.5b", 1_500_000_000),
        ("7B", 7_000_000_000),
        ("7e9", 7_000_000_000),
        ("1.5e9", 1_500_000_000),
        ("1e+9", 1_000_000_000),
        ("1.54b", 1_540_000_000),
        ("2 B", 2_000_000_000),
        ("0.5t", 500_000_000_000),
        ("82k", 82_000),
        ("1_100_048_384", 1_100_048_384),
        ("1,100,048,384", 1_100_048_384),
        ("346763264", 346_763_264),
        (346763264, 346_763_264),
        (7e9, 7_000_000_000),
    ],
)
def test_parse_params_examples(text, expected):
    assert parse_params(text) == expected


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("1x", "unknown unit 'x'"),
        ("1.5", "did you mean 1.5b"),
        (1.5, "did you mean 1.5b"),
        ("-1b", "not a parameter count"),
        ("0", "> 0"),
        (0, "> 0"),
        ("", "not a parameter count"),
        ("b", "not a parameter count"),
        ("1..5b", "not a parameter count"),
        ("1,00b", "misplaced ','"),
        (True, "expected a parameter count"),
        (None, "expected a parameter count"),
        ([1], "expected a parameter count"),
        ("1e99b", "out of range"),
    ],
)
def test_parse_params_refuses(bad, fragment):
    with pytest.raises(ValueError, match=None) as info:
        parse_params(bad)
    assert fragment in str(info.value)


UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


@given(st.integers(min_value=1, max_value=10**15))
def test_integers_and_their_strings_parse_to_themselves(n):
    assert parse_params(n) == n
    assert parse_params(str(n)) == n
    assert parse_params(f"{n:_}") == n
    assert parse_params(f"{n:,}") == n


@given(
    st.decimals(
        min_value=Decimal("0.001"), max_value=Decimal("999.999"), places=3, allow_nan=False, allow_infinity=False
    ),
    st.sampled_from(["k", "m", "b", "g", "t", "K", "M", "B", "G", "T"]),
)
def test_unit_strings_are_exact_decimal_multiples(d, unit):
    expected = (d * UNITS[unit.lower()]).to_integral_value()
    if expected == 0:
        with pytest.raises(ValueError):
            parse_params(f"{d}{unit}")
        return
    assert parse_params(f"{d}{unit}") == int(expected)
    assert parse_params(f"{d} {unit}") == int(expected)


@given(st.integers(min_value=1, max_value=9), st.integers(min_value=0, max_value=12))
def test_scientific_notation(mantissa, exponent):
    assert parse_params(f"{mantissa}e{exponent}") == mantissa * 10**exponent


@given(st.integers(min_value=1, max_value=10**14))
def test_format_params_round_trips_within_three_significant_figures(n):
    text = format_params(n)
    back = parse_params(text)
    assert abs(back - n) <= 0.005 * n + 1, (n, text, back)


@given(st.text(max_size=12))
def test_parser_never_crashes_with_anything_but_valueerror(s):
    try:
        n = parse_params(s)
    except ValueError:
        return
    assert isinstance(n, int) and n > 0


def test_context_units():
    assert parse_context("8k") == 8192
    assert parse_context("128K") == 131072
    assert parse_context(4096) == 4096
    assert parse_context("2048") == 2048
    with pytest.raises(ValueError):
        parse_context("8m")
    with pytest.raises(ValueError):
        parse_context(0)
    assert format_context(131072) == "128k" and format_context(2000) == "2000" and format_context(None) == "?"


@settings(max_examples=50)
@given(st.integers(min_value=1, max_value=1024))
def test_context_k_is_1024(n):
    assert parse_context(f"{n}k") == n * 1024


def test_format_params_examples():
    assert format_params(134_515_008) == "135M"
    assert format_params(1_500_000_000) == "1.5B"
    assert format_params(999_999_999) == "1B"
    assert format_params(7_615_616_512) == "7.62B"
    assert format_params(None) == "?"
