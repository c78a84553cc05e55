"""Parameter counts and context lengths written with units: `135m`, `1.5b`, `7B`, `7e9`, `8k`.

Pure Python (no third-party imports) so the CLI can use it before anything heavy loads.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# Decimal SI-style multipliers for parameter counts ("1.5b" = 1,500,000,000).
_PARAM_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_NUMBER = re.compile(r"^\s*([0-9][0-9_,]*(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?\s*([a-zA-Z]?)\s*$")


def parse_params(value: object) -> int:
    """Return a parameter count as an int.

    Accepts an int, a whole float, or a string with an optional unit: k (thousand), m (million),
    b or g (billion), t (trillion), case-insensitive, e.g. "135m", "1.5b", "7B", "7e9", "1_100_048_384".
    Units are decimal: "1.5b" is exactly 1,500,000,000. With a unit the result is rounded to the
    nearest whole parameter; without one it must already be whole ("1.5" is refused: did you mean 1.5b?).

    Raises:
        ValueError: with a one-sentence reason, for anything else (including bools, zero, negatives).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a parameter count like 135m, 1.5b or 7000000000, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number of parameters (did you mean {value:g}b?)")
        n = int(value)
    elif isinstance(value, str):
        n = _parse_units(value, _PARAM_UNITS, what="parameter count", example="135m, 1.5b, 7B or 7e9")
    else:
        raise ValueError(f"expected a parameter count like 135m, 1.5b or 7000000000, got {type(value).__name__}")
    if n <= 0:
        raise ValueError(f"a parameter count must be > 0, got {value!r}")
    return n


# Context lengths: "k" means 1024 tokens ("8k" = 8192, "128k" = 131072), as model cards use it.
_CONTEXT_UNITS = {"": 1, "k": 1024}


def parse_context(value: object) -> int:
    """Return a context length in tokens: an int, or a string like "4096", "8k" (k = 1024 tokens)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a context length like 4096 or 8k, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        n = _parse_units(value, _CONTEXT_UNITS, what="context length", example="4096 or 8k")
    else:
        raise ValueError(f"expected a context length like 4096 or 8k, got {value!r}")
    if n <= 0:
        raise ValueError(f"a context length must be > 0, got {value!r}")
    return n


def _parse_units(text: str, units: dict[str, int], *, what: str, example: str) -> int:
    m = _NUMBER.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a {what} (write e.g. {example})")
    digits, exponent, unit = m.groups()
    unit_l = unit.lower()
    if unit_l not in units:
        allowed = ", ".join(u for u in units if u)
        raise ValueError(f"{text!r}: unknown unit {unit!r} (use {allowed})")
    if "," in digits and not re.fullmatch(r"[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?", digits):
        raise ValueError(f"{text!r} is not a {what} (misplaced ','; write e.g. {example})")
    try:
        number = Decimal(digits.replace("_", "").replace(",", ""))
        if exponent is not None:
            number = number.scaleb(int(exponent))
    except (InvalidOperation, ValueError):
        raise ValueError(f"{text!r} is not a {what} (write e.g. {example})") from None
    if abs(number.adjusted()) > 30:
        raise ValueError(f"{text!r} is out of range for a {what}")
    total = number * units[unit_l]
    if unit_l:
        return int(total.to_integral_value())  # round half-even to a whole parameter
    if total != total.to_integral_value():
        hint = f" (did you mean {text.strip()}b?)" if units is _PARAM_UNITS else ""
        raise ValueError(f"{text!r} is not a whole number{hint}")
    return int(total)


def format_params(n: int | None) -> str:
    """135M, 1.54B, 7B: three significant figures, decimal units (the inverse of parse_params, rounded)."""
    if n is None:
        return "?"
    r = float(f"{n:.3g}")  # round to three significant figures first, so 999,999,999 -> 1B
    for size, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if r >= size:
            v = r / size
            return f"{v:.3g}{unit}" if v < 1000 else f"{v:.0f}{unit}"
    return str(n)


def format_context(n: int | None) -> str:
    """8192 -> '8k', 131072 -> '128k', 2000 -> '2000'."""
    if n is None:
        return "?"
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)
