"""One way to declare an option, shared by the CLI flags, recipe steps and the library.

An options set is a `LightOptions` subclass whose fields are declared with
`name: type = option(kind, default, help, ...)`: the type (kind), the default, the help text
(why the option exists, shown as the flag's help), choices, bounds (ge/gt/le/lt), and how the
flag is spelt (short form, metavar, panel). Field checks are `normalise_<field>(value, done)`
static methods; checks across fields are `check_<what>(self)` methods. `gptctl.cli.flags` derives
the typer flags from the same declarations (the default shown is the declared one, never repeated
by hand) and recipes validate their `options:` with them through `option_problems`.

Why not pydantic, which the option sets used before: importing it and building the models cost
~0.15 s of every start-up (`gptctl --help` took ~0.14 s in all without it), the flags needed a
second generator over pydantic's FieldInfo, and the subset gptctl uses (lax coercion of recipe
and CLI strings, bounds, choices, one problem list with field paths) is ~200 lines here. The
classes keep the part of pydantic's interface the rest of gptctl uses: `model_validate`,
`model_fields`, `model_dump(mode="json")`, attribute access. `parse_options` / `option_problems`
turn problems into one `BadInput` listing every problem with its field path (and file:line when
the caller knows it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from gptctl.errors import BadInput


def did_you_mean(word, choices) -> str:
    from gptctl.yamlfile import did_you_mean as dym  # imports PyYAML: only on the error path

    return dym(word, choices)


def format_path(path) -> str:
    from gptctl.yamlfile import format_path as fp

    return fp(path)


T = TypeVar("T")

# The problem reported for a required option that was not given; recipe validation skips it for
# options whose value is only known at run time.
MISSING = "field required"
KINDS = ("str", "int", "float", "bool", "list[str]", "list[int]", "list", "dict", "any")


class OptionSpec:
    """What one option is: kind, default, help, choices and bounds, and how its flag is spelt.

    A plain class, not a dataclass: generating a dataclass's methods costs ~1 ms per class at import,
    and every command's `--help` imports these declarations.
    """

    __slots__ = (
        "kind",
        "default",
        "help",
        "required",
        "choices",
        "ge",
        "gt",
        "le",
        "lt",
        "panel",
        "flag",
        "short",
        "metavar",
        "cli",
    )

    def __init__(
        self,
        kind: str,
        default: Any = None,
        help: str = "",
        *,
        required: bool = False,
        choices: tuple | None = None,
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = None,
        lt: float | None = None,
        panel: str | None = None,
        flag: str | None = None,
        short: str | None = None,
        metavar: str | None = None,
        cli: bool = True,
    ):
        if kind not in KINDS:
            raise AssertionError(f"unknown option kind {kind!r}")
        self.kind, self.default, self.help, self.required = kind, default, help, required
        self.choices = tuple(choices) if choices is not None else None  # allowed values (of each item, for lists)
        self.ge, self.gt, self.le, self.lt = ge, gt, le, lt
        self.panel = panel  # the --help panel of the flag
        self.flag = flag  # the flag's spelling when not --field-name (e.g. "--instruct/--base")
        self.short = short  # e.g. "-m"
        self.metavar = metavar
        self.cli = cli  # False: recipe/library only (or a value the command spells itself, e.g. an argument)

    def __repr__(self) -> str:
        return f"OptionSpec({self.kind!r}, {self.default!r}, required={self.required})"

    def fresh_default(self) -> Any:
        """The default, as a new list/dict for each instance (never shared between instances)."""
        return type(self.default)(self.default) if isinstance(self.default, (list, dict)) else self.default

    def bounds_text(self) -> str:
        words = {
            "ge": "greater than or equal to",
            "gt": "greater than",
            "le": "less than or equal to",
            "lt": "less than",
        }
        return " and ".join(f"{words[k]} {getattr(self, k):g}" for k in words if getattr(self, k) is not None)


def option(kind: str, default: Any = None, help: str = "", **kw: Any) -> Any:
    """Declare one option of a `LightOptions` class: `name: type = option(kind, default, help, ...)`.

    Keywords: required, choices, ge/gt/le/lt (bounds), panel, flag, short, metavar, cli (see OptionSpec).
    """
    if default is None and kind in ("list", "dict") and not kw.get("required"):
        default = {} if kind == "dict" else []  # list[str]/list[int] may mean something by None
    return OptionSpec(kind, default, help, **kw)


def option_problems(model_cls: type, data: dict[str, Any], prefix: tuple = ()) -> tuple[Any, list[tuple[tuple, str]]]:
    """Validate `data` against `model_cls`; return (instance or None, [(field path, problem)])."""
    try:
        return model_cls.model_validate(data), []
    except OptionsInvalid as exc:
        return None, [(prefix + loc, msg) for loc, msg in exc.problems]


def parse_options(model_cls: Callable[..., T], data: dict[str, Any], *, what: str = "options") -> T:
    """Validate CLI-provided values; raise BadInput listing every problem at once."""
    inst, problems = option_problems(model_cls, {k: v for k, v in data.items() if v is not None})
    if problems:
        details = [f"{format_path(p)}: {m}" for p, m in problems]
        first = details[0] if len(details) == 1 else f"{len(details)} problems in the {what}"
        raise BadInput(
            f"invalid {what}: {first}" if len(details) == 1 else first,
            "see `--help` for allowed values",
            details=details if len(details) > 1 else None,
        )
    return inst


class OptionsInvalid(ValueError):
    """Raised by `LightOptions.model_validate`: every problem, as [(field path, message)]."""

    def __init__(self, problems: list[tuple[tuple, str]]):
        super().__init__("; ".join(f"{format_path(p)}: {m}" for p, m in problems))
        self.problems = problems


class LightOptions:
    """Base of every options set: the declared fields (`model_fields`), validation, dumps, equality.

    Validation mirrors pydantic's lax mode where gptctl relies on it: unknown keys are errors,
    None means "not set", "3" is an int, "true" a bool, "1e-3" a float, "cpu,cuda" a list[str].
    Fields are checked in declaration order (`done` holds those checked so far); the `check_*`
    methods run, base class first, once every field is valid, and the first to fail is reported.
    """

    model_fields: ClassVar[dict[str, OptionSpec]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fields = dict(cls.model_fields)  # the base class's, in declaration order
        for name, value in list(vars(cls).items()):
            if isinstance(value, OptionSpec):
                fields[name] = value  # a redeclared field keeps its base position (as dataclasses do)
        cls.model_fields = fields

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
        fields = cls.model_fields
        problems = [((key,), f"unknown option {key!r}{did_you_mean(key, fields)}") for key in data if key not in fields]
        done: dict[str, Any] = {}
        for name, f in fields.items():
            try:
                done[name] = cls._field_value(name, f, data.get(name), done)
            except ValueError as exc:
                raw = data.get(name)
                msg = str(exc) + (f" (got {raw!r})" if raw is not None and not isinstance(raw, (dict, list)) else "")
                problems.append(((name,), msg))
                done[name] = None
        if problems:
            raise OptionsInvalid(problems)
        obj = cls.__new__(cls)
        obj.__dict__.update(done)
        for check in _checks(cls):
            try:
                check(obj)
            except ValueError as exc:
                raise OptionsInvalid([((), str(exc))]) from None
        return obj

    @classmethod
    def _field_value(cls, name: str, spec: OptionSpec, raw: Any, done: dict) -> Any:
        if raw is None:
            if spec.required:
                raise ValueError(MISSING)
            return spec.fresh_default()
        value = _coerce(spec.kind, raw)
        for item in value if spec.kind in ("list[str]", "list[int]") else [value]:
            _check_choice_and_bounds(spec, item, listed=spec.kind.startswith("list["))
        norm = getattr(cls, f"normalise_{name}", None)
        return norm(value, done) if norm else value

    def model_dump(
        self, mode: str = "python", include: set[str] | None = None, exclude: set[str] | None = None
    ) -> dict[str, Any]:
        """The options as a dict of plain (JSON-ready) values, copies of the instance's."""
        import copy

        return {
            k: copy.deepcopy(v)
            for k, v in self.__dict__.items()
            if (include is None or k in include) and (exclude is None or k not in exclude)
        }

    def __eq__(self, other: Any) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, like pydantic models

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


def _checks(cls: type) -> list[Callable]:
    # Base classes first, each class's own checks in definition order (as pydantic ran its validators).
    seen: dict[str, Callable] = {}
    for klass in reversed(cls.__mro__):
        for name, fn in vars(klass).items():
            if name.startswith("check_") and callable(fn):
                seen.pop(name, None)
                seen[name] = getattr(cls, name)
    return list(seen.values())


def _quote_choices(choices: tuple) -> str:
    quoted = [repr(c) for c in choices]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _check_choice_and_bounds(spec: OptionSpec, v: Any, *, listed: bool) -> None:
    what = f"{v!r}: " if listed else ""
    if spec.choices is not None and v not in spec.choices:
        raise ValueError(f"{what}expected {_quote_choices(spec.choices)}")
    if v is None or isinstance(v, str):
        return
    ok = (
        (spec.ge is None or v >= spec.ge)
        and (spec.gt is None or v > spec.gt)
        and (spec.le is None or v <= spec.le)
        and (spec.lt is None or v < spec.lt)
    )
    if not ok:
        raise ValueError(f"{what}must be {spec.bounds_text()}")


_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}


def split_list(value: Any) -> list:
    """CLI values arrive as "cpu,cuda" or repeated flags; recipes may write lists or one string."""
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError("expected a list or a comma-separated string")
    out: list = []
    for item in value:
        if isinstance(item, str):
            out.extend(x.strip() for x in item.split(",") if x.strip())
        else:
            out.append(item)
    return out


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
    if kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError("expected a number")
        try:
            return float(v)
        except ValueError:
            raise ValueError("expected a number") from None
    if kind == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            return v.strip().lower() in _TRUE
        raise ValueError("expected true or false")
    if kind in ("list[str]", "list[int]"):
        item = kind[5:-1]
        try:
            return [_coerce(item, x) for x in split_list(v)]
        except ValueError as exc:
            raise ValueError(f"{exc} in each item") from None
    return v  # "list", "dict", "any": the field's normaliser checks the shape (it accepts several spellings)
