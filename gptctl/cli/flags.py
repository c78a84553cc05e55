"""Typer flags derived from option declarations (`gptctl.options.option`): the one place flags are made.

Every option field of a `LightOptions` class becomes one flag: `--field-name` (or the declared spelling),
its short form, metavar (the allowed values where there are choices), help panel, the declared help,
and the declared default shown as `[default: ...]`. The flag's own default is None ("not given"), so an option left out
gets the declaration's default, on the command line and in recipes alike; nothing is repeated by hand.
Lists are repeatable flags (and `list[str]`/`list[int]` options also split "a,b"). Values are checked
by the options class, not by click, so every problem is reported at once in gptctl's words.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Optional

import typer

from gptctl.cli.common import handle_errors
from gptctl.options import OptionSpec

_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "any": str}


def flag_names(name: str, spec: OptionSpec) -> list[str]:
    """The flag's spellings: `--field-name` (or the declared one) and the short form."""
    return [spec.flag or "--" + name.replace("_", "-")] + ([spec.short] if spec.short else [])


def flag_metavar(spec: OptionSpec) -> str | None:
    """The declared metavar, else the allowed values ("[cpu|cuda|tensorrt]"), which come from the declaration
    or the registry behind it."""
    if spec.metavar or spec.choices is None:
        return spec.metavar
    return "[" + "|".join(str(c) for c in spec.choices) + "]"


def default_text(spec: OptionSpec) -> str | bool:
    """What `[default: ...]` shows: the declared default (False: nothing to show)."""
    d = spec.default
    if spec.required or d is None or d == [] or d == {} or spec.kind == "bool":
        return False
    if isinstance(d, list):
        return ",".join(str(x) for x in d)
    return f"{d:g}" if isinstance(d, float) else str(d)


def flag_type(spec: OptionSpec) -> Any:
    """The Python type typer parses the flag as: lists as repeatable strings, the rest by kind."""
    if spec.kind in ("list", "dict", "list[str]", "list[int]"):
        return Optional[list[str]]  # noqa: UP045
    kind = _TYPES[spec.kind]
    if spec.required or (spec.kind == "bool" and spec.default is not None):
        return kind
    return Optional[kind]  # noqa: UP045


def flag(name: str, spec: OptionSpec) -> Any:
    """A fresh typer.Option for one declared option (typer needs one per signature)."""
    names = flag_names(name, spec)
    common = {"help": spec.help, "rich_help_panel": spec.panel}
    if flag_metavar(spec):
        common["metavar"] = flag_metavar(spec)
    if spec.required:
        return typer.Option(..., *names, show_default=False, **common)
    if spec.kind == "bool":
        pair = "/" in names[0] and spec.default is not None  # --baseline/--no-baseline shows which is on
        return typer.Option(spec.default, *names, show_default=pair, **common)
    shown = default_text(spec)
    if shown is not False:  # typer would show a text default as "(64)"; `\[` keeps rich markup off it
        common["help"] = f"{spec.help} \\[default: {shown}]"
    return typer.Option(None, *names, show_default=False, **common)


def _given(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def options_command(
    cls: type,
    run: Callable[..., Any],
    *,
    name: str,
    doc: str | None,
    extra: Iterable[inspect.Parameter] = (),
    skip: Iterable[str] = (),
    only: Iterable[str] | None = None,
) -> Callable[..., Any]:
    """A function typer can register as a command: one flag per declared option of `cls`, then `extra`.

    The command calls `run(values, **extras)`, where `values` holds the options given on the command line
    (None and empty lists left out, so the declared defaults apply) and `extras` the `extra` parameters.
    `skip` leaves fields out (a command spelling them itself, e.g. as an argument); `only` keeps a subset.
    Errors become one sentence and an exit code (`handle_errors`).
    """
    skip, keep = set(skip), None if only is None else set(only)
    fields = [(n, s) for n, s in cls.model_fields.items() if s.cli and n not in skip and (keep is None or n in keep)]
    params = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=flag(n, s), annotation=flag_type(s))
        for n, s in fields
    ]
    params += list(extra)
    option_names = [n for n, _ in fields]

    def command(**kwargs: Any) -> Any:
        values = {n: _given(kwargs.pop(n)) for n in option_names}
        return run({k: v for k, v in values.items() if v is not None and v != []}, **kwargs)

    command.__name__ = name.replace("-", "_")
    command.__doc__ = doc
    wrapped = handle_errors(command)
    wrapped.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapped.__annotations__ = {p.name: p.annotation for p in params}
    return wrapped


def extra_option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    """A command parameter that is not an option of the library (e.g. `--json`, a positional argument)."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def json_flag(help: str = "Print one JSON object to stdout instead of a table.") -> inspect.Parameter:
    """The `--json` flag every command has (its name, json_out, is what `handle_errors` reads)."""
    return extra_option("json_out", bool, typer.Option(False, "--json", help=help, rich_help_panel="Output"))
