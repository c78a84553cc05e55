"""One definition of each option set, shared by the CLI flags and recipe steps.

Options are pydantic models (extra keys forbidden), except where start-up time matters: `select`
and `catalog` must answer in well under a second, and importing pydantic and building a model
costs ~0.15 s, so their options use `LightOptions` (below), which offers the part of pydantic's
interface the rest of gptctl uses (`model_validate`, `model_fields`, `model_dump`). Either way
`parse_options` / `option_problems` turn validation errors into one `BadInput` listing every
problem with its field path (and file:line when known).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, TypeVar

from gptctl.errors import BadInput


def did_you_mean(word, choices) -> str:
    from gptctl.yamlfile import did_you_mean as dym  # imports PyYAML: only on the error path

    return dym(word, choices)


def format_path(path) -> str:
    from gptctl.yamlfile import format_path as fp

    return fp(path)

T = TypeVar("T")


def option_problems(model_cls: type, data: dict[str, Any], prefix: tuple = ()) -> tuple[Any, list[tuple[tuple, str]]]:
    """Validate `data` against `model_cls`; return (instance or None, [(field path, problem)])."""
    if isinstance(model_cls, type) and issubclass(model_cls, LightOptions):
        try:
            return model_cls.model_validate(data), []
        except OptionsInvalid as exc:
            return None, [(prefix + loc, msg) for loc, msg in exc.problems]
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


# ------------------------------------------------------------------------------------------ light options

class OptionsInvalid(ValueError):
    """Raised by `LightOptions.model_validate`: every problem, as [(field path, message)]."""

    def __init__(self, problems: list[tuple[tuple, str]]):
        super().__init__("; ".join(f"{format_path(p)}: {m}" for p, m in problems))
        self.problems = problems


class LightOptions:
    """A dataclass-based options model for commands that must start fast (no pydantic import).

    Subclasses are `@dataclasses.dataclass(init=False)` classes whose fields carry a kind in their
    metadata ("str", "int", "bool", "list", "dict"; plus "help") and whose `normalise_<field>(value,
    done)` static methods (optional) turn an already type-checked value into its normal form or
    raise ValueError with the message to show; `done` holds the fields normalised so far, in
    declaration order (for checks across fields). Validation mirrors pydantic's lax mode where
    gptctl relies on it: unknown keys are errors, None means "not set", "3" is an int, "true" a bool.
    """

    model_fields: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.model_fields = {}  # filled by `_fields()` once the dataclass decorator has run

    @classmethod
    def _fields(cls) -> dict[str, dataclasses.Field]:
        found = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if not cls.model_fields:
            cls.model_fields = {name: f.metadata.get("help", "") for name, f in found.items()}
        return found

    def __init__(self, **data: Any):
        try:
            valid = type(self).model_validate(data)
        except OptionsInvalid as exc:
            details = [f"{format_path(p)}: {m}" for p, m in exc.problems]
            raise BadInput(f"invalid {type(self).__name__}: {'; '.join(details)}") from None
        self.__dict__.update(valid.__dict__)

    @classmethod
    def model_validate(cls, data: Any):
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise OptionsInvalid([((), f"expected a mapping of options, got {type(data).__name__}")])
        fields = cls._fields()
        problems: list[tuple[tuple, str]] = []
        for key in data:
            if key not in fields:
                problems.append(((key,), f"unknown option {key!r}{did_you_mean(key, fields)}"))
        done: dict[str, Any] = {}
        for name, f in fields.items():
            raw = data.get(name)
            if raw is None:
                done[name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
                continue
            try:
                value = _coerce(f.metadata["kind"], raw)
                norm = getattr(cls, f"normalise_{name}", None)
                done[name] = norm(value, done) if norm else value
            except ValueError as exc:
                msg = str(exc)
                if not isinstance(raw, (dict, list)):
                    msg += f" (got {raw!r})"
                problems.append(((name,), msg))
                done[name] = None
        if problems:
            raise OptionsInvalid(problems)
        obj = cls.__new__(cls)
        obj.__dict__.update(done)
        return obj

    def model_dump(self, mode: str = "python", include: set[str] | None = None) -> dict[str, Any]:
        import copy

        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if include is None or k in include}


_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}


def _coerce(kind: str, v: Any) -> Any:
    """Type-check one option value the way pydantic's lax mode would for these kinds."""
    if kind == "str":
        if isinstance(v, str):
            return v
        raise ValueError("expected a string")
    if kind == "int":
        if isinstance(v, bool):
            raise ValueError("expected an integer")
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
            return int(v)
        raise ValueError("expected an integer")
    if kind == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            return v.strip().lower() in _TRUE
        raise ValueError("expected true or false")
    if kind in ("list", "dict", "any"):
        return v  # the field's normaliser checks the shape (it accepts several spellings)
    raise AssertionError(f"unknown option kind {kind!r}")
