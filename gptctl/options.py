"""One definition of each option set, shared by the CLI flags and recipe steps.

Options are pydantic models (extra keys forbidden). `parse_options` turns pydantic's errors into
one `BadInput` listing every problem with its field path (and file:line when known).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from gptctl.errors import BadInput
from gptctl.yamlfile import did_you_mean, format_path

T = TypeVar("T")


def option_problems(model_cls: type, data: dict[str, Any], prefix: tuple = ()) -> tuple[Any, list[tuple[tuple, str]]]:
    """Validate `data` against `model_cls`; return (instance or None, [(field path, problem)])."""
    from pydantic import ValidationError

    try:
        return model_cls.model_validate(data), []
    except ValidationError as exc:
        fields = list(model_cls.model_fields)
        problems = []
        for e in exc.errors():
            loc = tuple(e["loc"])
            if e["type"] == "extra_forbidden":
                msg = f"unknown option {loc[-1]!r}{did_you_mean(loc[-1], fields)}"
            else:
                msg = e["msg"]
                if "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], (dict, list)):
                    msg += f" (got {e['input']!r})"
            problems.append((prefix + loc, msg))
        return None, problems


def parse_options(model_cls: Callable[..., T], data: dict[str, Any], *, what: str = "options") -> T:
    """Validate CLI-provided values; raise BadInput listing every problem at once."""
    inst, problems = option_problems(model_cls, {k: v for k, v in data.items() if v is not None})
    if problems:
        details = [f"{format_path(p)}: {m}" for p, m in problems]
        first = details[0] if len(details) == 1 else f"{len(details)} problems in the {what}"
        raise BadInput(f"invalid {what}: {first}" if len(details) == 1 else first, "see `--help` for allowed values",
                       details=details if len(details) > 1 else None)
    return inst
