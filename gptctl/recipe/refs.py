"""`${...}` references inside recipe values, and `--set a.b.c=value` overrides.

    ${steps.NAME.model}          what the next step loads (a selection JSON for `select`, else the folder)
    ${steps.NAME.output}         the step's output folder
    ${steps.NAME.metrics.X}      any value from the step's manifest (metrics, validation, benchmark, ...)
    ${vars.X}                    a value from the recipe's `vars:`
    ${env:VAR} ${env:VAR:-dflt}  an environment variable (an unset one without a default is an error;
                                 the default may itself hold references)
    ${recipe.dir} ${recipe.name} the recipe file's folder, the recipe's name

A value that is exactly one reference takes the referenced value's type (a number stays a number);
references inside a longer string are formatted into it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

# Attributes a step reference may name: the two paths the runner knows, or a manifest key.
STEP_ATTRS = ("model", "output", "metrics", "validation", "benchmark", "options", "inputs", "outputs", "method")
PATH_ATTRS = ("model", "output")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Ref:
    """One parsed reference. `root` is steps | vars | env | recipe; `parts` the dotted rest."""

    text: str  # the whole `${...}`
    root: str
    parts: tuple[str, ...]
    default: str | None = None  # for ${env:VAR:-default}

    @property
    def step(self) -> str | None:
        return self.parts[0] if self.root == "steps" else None

    @property
    def is_path(self) -> bool:
        """True for ${steps.X.model} / ${steps.X.output}: a location, not a value from a manifest."""
        return self.root == "steps" and len(self.parts) == 2 and self.parts[1] in PATH_ATTRS


class RefError(ValueError):
    pass


def parse_ref(inner: str, text: str) -> Ref:
    """Parse the inside of `${...}`; raise RefError with a readable reason."""
    inner = inner.strip()
    if "${" in inner and not inner.startswith("env:"):
        raise RefError(f"{text}: references nest only in an env default, e.g. ${{env:X:-${{recipe.dir}}/y}}")
    if inner.startswith("env:"):
        name, sep, default = inner[4:].partition(":-")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise RefError(f"{text}: {name!r} is not an environment variable name")
        return Ref(text, "env", (name,), default if sep else None)
    parts = tuple(inner.split("."))
    root, rest = parts[0], parts[1:]
    if root == "steps":
        if len(rest) < 2:
            raise RefError(
                f"{text}: say what to take from the step, e.g. ${{steps.{rest[0] if rest else 'NAME'}.model}}"
            )
        if rest[1] not in STEP_ATTRS:
            from gptctl.yamlfile import did_you_mean

            raise RefError(
                f"{text}: a step has no {rest[1]!r}{did_you_mean(rest[1], STEP_ATTRS)}; use one of {', '.join(STEP_ATTRS)}"  # noqa: E501
            )
        if rest[1] in PATH_ATTRS and len(rest) > 2:
            raise RefError(f"{text}: {rest[1]} is a path; it has no {'.'.join(rest[2:])!r}")
    elif root == "vars":
        if not rest:
            raise RefError(f"{text}: name the variable, e.g. ${{vars.NAME}}")
    elif root == "recipe":
        if rest not in (("dir",), ("name",)):
            raise RefError(f"{text}: use ${{recipe.dir}} or ${{recipe.name}}")
    else:
        raise RefError(f"{text}: unknown reference; use steps.NAME.ATTR, vars.NAME, env:VAR or recipe.dir")
    if any(not p for p in parts):
        raise RefError(f"{text}: empty name in the dotted path")
    return Ref(text, root, rest)


def _spans(value: str) -> list[tuple[int, int, str]]:
    """(start, end, inside) of each top-level `${...}`; braces nest (for ${env:X:-${recipe.dir}/y})."""
    spans, i = [], 0
    while (start := value.find("${", i)) >= 0:
        depth, k = 0, start
        while k < len(value):
            if value.startswith("${", k):
                depth, k = depth + 1, k + 2
                continue
            if value[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        if depth:
            raise RefError(f"{value!r}: unclosed '${{'")
        spans.append((start, k + 1, value[start + 2 : k]))
        i = k + 1
    return spans


def find_refs(value: str) -> list[Ref]:
    """Every reference in a string (those inside env defaults too); raise RefError for a malformed one."""
    refs = []
    for start, end, inner in _spans(value):
        ref = parse_ref(inner, value[start:end])
        refs.append(ref)
        if ref.default:
            refs.extend(find_refs(ref.default))
    return refs


def walk_strings(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """Yield (path, string) for every string leaf of a nested dict/list."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from walk_strings(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk_strings(v, path + (i,))


def substitute(value: Any, resolve: Callable[[Ref], Any]) -> Any:
    """Replace every reference in a nested value. `resolve(ref)` returns the referenced value."""
    if isinstance(value, dict):
        return {k: substitute(v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, resolve) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    spans = _spans(value)
    if len(spans) == 1 and spans[0][0] == 0 and spans[0][1] == len(value):
        return resolve(parse_ref(spans[0][2], value))
    out, last = [], 0
    for start, end, inner in spans:
        out += [value[last:start], _as_text(resolve(parse_ref(inner, value[start:end])))]
        last = end
    return "".join(out + [value[last:]])


def _as_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


def split_override(text: str) -> tuple[tuple, Any]:
    """`steps.tune.options.rank=16` -> (("steps", "tune", "options", "rank"), 16); value read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RefError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. steps.tune.options.rank=16")
    parts = tuple(int(p) if p.isdigit() else p for p in key.split("."))
    if any(p == "" for p in parts):
        raise RefError(f"--set {text!r}: empty name in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise RefError(f"--set {text!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parts, value


def apply_override(data: dict, parts: tuple, value: Any) -> None:
    """Set `data[parts...] = value`, creating mappings on the way; raise RefError where a path cannot go."""
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        here = ".".join(map(str, parts[: i + 1]))
        if isinstance(node, dict):
            if not isinstance(node.get(part), (dict, list)):
                if part in node and node[part] is not None:
                    raise RefError(
                        f"--set {'.'.join(map(str, parts))}: {here} is a {type(node[part]).__name__}, not a mapping"
                    )
                node[part] = {}
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            raise RefError(f"--set {'.'.join(map(str, parts))}: cannot go into {here}")
    last = parts[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last <= len(node):
        node[last : last + 1] = [value]
    else:
        raise RefError(f"--set {'.'.join(map(str, parts))}: cannot set an item of a {type(node).__name__}")


def is_name(text: Any) -> bool:
    return isinstance(text, str) and bool(_NAME.match(text))
