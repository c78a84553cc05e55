"""A recipe file, read and checked as a whole before anything runs.

    name: quickstart
    vars: {data: "${recipe.dir}/data/notes.txt"}
    steps:
      pick:  {kind: select, options: {max_params: 200m, license: apache-2.0}, sources: {ID: pkg:...}}
      tune:  {kind: optimize, method: lora, options: {model: "${steps.pick.model}", data: "${vars.data}"}}
      ship:  {kind: export, options: {quantize: int4}}   # model: the previous step's model
    gates:
      - steps.tune.metrics.ppl_after <= 1.05 * steps.tune.metrics.ppl_before

`load_recipe` returns a `Recipe` or raises one `BadInput` listing every problem with file:line and
key path: YAML syntax, unknown keys (with did-you-mean), step kinds and methods, references to
missing or later steps, undefined variables, options (types, choices and ranges, validated by the
same option declarations the CLI's flags come from), gates that do not parse.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput
from gptctl.options import MISSING, option_problems
from gptctl.recipe import gates as gate_lang
from gptctl.recipe.refs import Ref, RefError, apply_override, find_refs, is_name, split_override, substitute
from gptctl.recipe.steps import KINDS, StepKind, model_path
from gptctl.yamlfile import did_you_mean, duplicate_keys, format_path, line_of, load_yaml_text

TOP_KEYS = ("name", "description", "vars", "steps", "gates", "search")
STEP_KEYS = ("kind", "method", "options", "description")
_RECIPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass
class Step:
    name: str
    kind: str
    method: str | None
    options: dict[str, Any]  # as written (vars/env/recipe references resolved; step references kept)
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    path: Path | None
    steps: list[Step]
    gates: list[str]
    vars: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    overrides: list[str] = field(default_factory=list)
    # `search:` as written, for `gptctl tune` (gptctl.tune.space checks it; `gptctl run` ignores it),
    # with the file line of each of its keys.
    search: dict[str, Any] | None = None
    search_lines: dict[tuple, int] = field(default_factory=dict, repr=False)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


class _Problems:
    """Collects (key path, message) and renders them as `file:line: key.path: message`."""

    def __init__(self, name: str, lines: dict[tuple, int], overridden: dict[tuple, str]):
        self.name, self.lines, self.overridden = name, lines, overridden
        self.items: list[tuple[tuple, str]] = []

    def add(self, path: tuple, message: str) -> None:
        self.items.append((tuple(path), message))

    def near(self, path: tuple) -> bool:
        """A problem is already reported at `path` (or above or below it): don't pile on."""
        return any(p[: len(path)] == path or path[: len(p)] == p for p, _ in self.items if len(p) > 2)

    def where(self, path: tuple) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.overridden:
                return f"--set {self.overridden[path[:n]]}"
        line = line_of(self.lines, path)
        return f"{self.name}:{line}" if line else self.name

    def render(self) -> list[str]:
        """One line per problem, in file order; problems with the --set flags themselves last."""

        def order(item):
            line = line_of(self.lines, item[0]) if item[0] else None
            return (item[0] == ("--set",), line or 0)

        return [
            m if p == ("--set",) else f"{self.where(p)}: {format_path(p)}: {m}"
            for p, m in sorted(self.items, key=order)
        ]


def load_recipe(
    path: str | os.PathLike,
    overrides: list[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    kinds: Mapping[str, StepKind] | None = None,
) -> Recipe:
    """Read, override and validate a recipe file. Raises BadInput listing every problem (exit 2)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise BadInput(f"recipe {p}: no such file", "check the path, e.g. recipes/quickstart.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"recipe {p}: cannot read: {exc}") from None
    return parse_recipe(text, str(p), overrides, env=env, kinds=kinds, recipe_dir=p.resolve().parent)


def parse_recipe(
    text: str,
    name: str = "<recipe>",
    overrides: list[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    kinds: Mapping[str, StepKind] | None = None,
    recipe_dir: Path | None = None,
) -> Recipe:
    """Validate recipe text (see `load_recipe`)."""
    env = os.environ if env is None else env
    kinds = KINDS if kinds is None else kinds
    data, lines = load_yaml_text(text, name)
    overridden: dict[tuple, str] = {}
    problems = _Problems(name, lines, overridden)
    for path, _ in duplicate_keys(text):
        problems.add(path, "this key appears twice (the later one would silently win)")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add((), f"a recipe is a mapping with {', '.join(TOP_KEYS)}; got a {type(data).__name__}")
        _raise(problems, name)
    for text_ in overrides or []:
        try:
            parts, value = split_override(text_)
            apply_override(data, parts, value)
            overridden[parts] = text_
        except RefError as exc:
            problems.add(("--set",), str(exc))

    for key in data:
        if key not in TOP_KEYS:
            problems.add((key,), f"unknown key {key!r}{did_you_mean(key, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    recipe_name = data.get("name")
    if recipe_name is None:
        problems.add(("name",), "missing: give the recipe a name (it names the run folder runs/NAME/)")
    elif not isinstance(recipe_name, str) or not _RECIPE_NAME.match(recipe_name):
        problems.add(("name",), f"{recipe_name!r} is not a usable name (letters, digits, '.', '_', '-')")
        recipe_name = None
    context = {"dir": str(recipe_dir or Path.cwd()), "name": recipe_name or "recipe"}

    variables = _check_vars(data.get("vars"), problems, env, context)
    steps = _check_steps(data.get("steps"), problems, env, context, variables, kinds)
    gate_list = _check_gates(data.get("gates"), problems, steps, variables)
    description = data.get("description") or ""
    if not isinstance(description, str):
        problems.add(("description",), "must be text")
    search = data.get("search")
    if search is not None and not isinstance(search, dict):
        problems.add(("search",), "must be a mapping with space: and objectives: (see `gptctl tune --help`)")
    if problems.items:
        _raise(problems, name)
    recipe = Recipe(
        recipe_name, Path(name) if recipe_dir else None, steps, gate_list, variables, description, list(overrides or [])
    )
    recipe.search = search
    recipe.search_lines = {k: v for k, v in lines.items() if k[:1] == ("search",)}
    return recipe


def _raise(problems: _Problems, name: str) -> None:
    n = len(problems.items)
    raise BadInput(
        f"recipe {name} is invalid: {n} problem{'s' if n != 1 else ''}" + (":" if n else ""),
        "fix them and run again (`gptctl run RECIPE --dry-run` checks without running)",
        details=problems.render(),
    )


def _static_resolver(
    env: Mapping[str, str],
    context: dict,
    variables: dict,
    path: tuple,
    problems: _Problems,
    allow_steps: bool,
    seen_steps: list[str] | None = None,
    step_name: str | None = None,
    all_steps: list[str] | None = None,
):
    """Resolve vars/env/recipe references now; check step references and keep them as they are."""

    def resolve(ref: Ref) -> Any:
        if ref.root == "env":
            if ref.parts[0] in env:
                return env[ref.parts[0]]
            if ref.default is not None:
                return substitute(ref.default, resolve)
            problems.add(
                path,
                f"{ref.text}: the environment variable {ref.parts[0]} is not set "
                f"(set it, or give a default: ${{env:{ref.parts[0]}:-VALUE}})",
            )
            return None
        if ref.root == "recipe":
            return context[ref.parts[0]]
        if ref.root == "vars":
            node: Any = variables
            for i, part in enumerate(ref.parts):
                if not isinstance(node, dict) or part not in node:
                    known = list(node) if isinstance(node, dict) else []
                    where = "vars" if i == 0 else "vars." + ".".join(ref.parts[:i])
                    problems.add(path, f"{ref.text}: {where} has no {part!r}{did_you_mean(part, known)}")
                    return None
                node = node[part]
            return node
        # steps
        if not allow_steps:
            problems.add(path, f"{ref.text}: step results cannot be used here (only in step options)")
            return ref.text
        name = ref.step
        if name == step_name:
            problems.add(path, f"{ref.text}: a step cannot use its own results")
        elif name not in (all_steps or []):
            problems.add(path, f"{ref.text}: there is no step {name!r}{did_you_mean(name, all_steps or [])}")
        elif name not in (seen_steps or []):
            problems.add(path, f"{ref.text}: step {name!r} runs later; a step can only use earlier steps' results")
        return ref.text

    return resolve


def _resolve_static(value: Any, path: tuple, problems: _Problems, resolver_args: dict) -> Any:
    """Substitute the references that are known now, reporting each problem at its own key."""
    if isinstance(value, dict):
        return {k: _resolve_static(v, path + (k,), problems, resolver_args) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_static(v, path + (i,), problems, resolver_args) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    try:
        find_refs(value)
    except RefError as exc:
        problems.add(path, str(exc))
        return None
    return substitute(value, _static_resolver(path=path, problems=problems, **resolver_args))


def _check_vars(raw: Any, problems: _Problems, env: Mapping[str, str], context: dict) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(("vars",), f"must be a mapping of names to values, got a {type(raw).__name__}")
        return {}
    variables: dict[str, Any] = {}
    for key, value in raw.items():
        if not is_name(key):
            problems.add(("vars", key), f"{key!r} is not a usable variable name (letters, digits, '_')")
            continue
        # A variable may use env, recipe.dir and the variables above it.
        variables[key] = _resolve_static(
            value, ("vars", key), problems, dict(env=env, context=context, variables=dict(variables), allow_steps=False)
        )
    return variables


def _check_steps(raw: Any, problems: _Problems, env, context, variables, kinds) -> list[Step]:
    if raw is None:
        problems.add(("steps",), "missing: a recipe needs at least one step")
        return []
    if not isinstance(raw, dict) or not raw:
        problems.add(("steps",), "must be a mapping of step names to steps, e.g. steps: {pick: {kind: select, ...}}")
        return []
    names = [n for n in raw if is_name(n)]
    steps: list[Step] = []
    for _index, (name, spec) in enumerate(raw.items()):
        base = ("steps", name)
        if not is_name(name):
            problems.add(base, f"{name!r} is not a usable step name (letters, digits, '_'; gates write steps.NAME.x)")
            continue
        if not isinstance(spec, dict):
            problems.add(base, f"a step is a mapping with {', '.join(STEP_KEYS)}; got a {type(spec).__name__}")
            continue
        kind_name = spec.get("kind")
        kind = kinds.get(kind_name) if isinstance(kind_name, str) else None
        if kind_name is None:
            problems.add(base + ("kind",), f"missing: say what the step does ({', '.join(kinds)})")
        elif kind is None:
            problems.add(
                base + ("kind",),
                f"unknown kind {kind_name!r}{did_you_mean(str(kind_name), kinds)}; known: {', '.join(kinds)}",
            )
        allowed = STEP_KEYS + (kind.step_keys if kind else ())
        for key in spec:
            if key not in allowed:
                problems.add(
                    base + (key,),
                    f"unknown key {key!r}{did_you_mean(str(key), allowed)}; allowed: {', '.join(allowed)}",
                )
        method = _check_method(spec.get("method"), kind, base, problems)
        options = spec.get("options") if spec.get("options") is not None else {}
        if not isinstance(options, dict):
            problems.add(
                base + ("options",), f"must be a mapping of option names to values, got a {type(options).__name__}"
            )
            options = {}
        earlier = [s.name for s in steps]
        args = dict(
            env=env,
            context=context,
            variables=variables,
            allow_steps=True,
            seen_steps=earlier,
            step_name=name,
            all_steps=names,
        )
        options = _resolve_static(options, base + ("options",), problems, args) or {}
        sources = _check_sources(spec.get("sources"), base, problems, args)
        if kind is not None:
            for f in kind.runner_fields:
                if f in options:
                    problems.add(
                        base + ("options", f),
                        f"{f!r} is set by the runner (each step writes to WORKDIR/{name}/); remove it",
                    )
            if kind.takes_model and "model" not in options:
                if steps:
                    options = {"model": f"${{steps.{steps[-1].name}.model}}", **options}
                else:
                    problems.add(
                        base + ("options", "model"), "missing: the first step that loads a model needs options.model"
                    )
            if method is not None or kind.methods is None:
                _check_options(kind, method, options, base, problems)
            _check_inputs_exist(kind, options, base, problems)
        steps.append(Step(name, kind_name if isinstance(kind_name, str) else "?", method, options, sources))
    return steps


def _check_method(method: Any, kind: StepKind | None, base: tuple, problems: _Problems) -> str | None:
    if kind is None:
        return method if isinstance(method, str) else None
    if kind.methods is None:
        if method is not None:
            problems.add(base + ("method",), f"a {kind.name} step takes no method")
        return None
    try:
        known = kind.methods()
    except ImportError as exc:  # the library behind this kind is missing from this install
        problems.add(base + ("kind",), f"{kind.name} steps are not available here: {exc}")
        return None
    if method is None:
        problems.add(base + ("method",), f"missing: which {kind.name} method ({', '.join(known)})")
        return None
    if method not in known:
        problems.add(
            base + ("method",),
            f"unknown method {method!r}{did_you_mean(str(method), known)}; known: {', '.join(known)}",
        )
        return None
    return method


def _check_sources(raw: Any, base: tuple, problems: _Problems, args: dict) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        problems.add(
            base + ("sources",), "must map catalog ids to local models (a folder, a .gguf file or pkg:PACKAGE/FILE)"
        )
        return {}
    return _resolve_static(raw, base + ("sources",), problems, {**args, "allow_steps": False}) or {}


class _Unknown:
    """Stands for a value only known when the step runs (a metric from an earlier step)."""

    TEXT = "\0run-time value\0"

    def __str__(self) -> str:
        return self.TEXT


def placeholder_options(kind: StepKind, step_name: str, options: dict, workdir: Path | None = None) -> tuple[dict, set]:
    """Options as they can be checked before running: step paths filled with their would-be paths,
    runner fields filled in, and the names of options whose value is only known at run time."""
    unknown: set[str] = set()
    workdir = workdir or Path("runs") / "RECIPE"

    def resolve(ref: Ref) -> Any:
        if ref.is_path:
            return (
                str(workdir / ref.step) if ref.parts[1] == "output" else "${" + ".".join(("steps",) + ref.parts) + "}"
            )
        return _Unknown()

    filled = {}
    for key, value in options.items():
        v = substitute(value, resolve)
        if any(isinstance(x, _Unknown) for x in _leaves(v)) or (isinstance(v, str) and _Unknown.TEXT in v):
            unknown.add(key)
            continue
        filled[key] = v
    if "output" in kind.runner_fields:
        filled["output"] = str(workdir / step_name)
    if "overwrite" in kind.runner_fields:
        filled["overwrite"] = True
    return filled, unknown


def _leaves(v: Any):
    if isinstance(v, dict):
        for x in v.values():
            yield from _leaves(x)
    elif isinstance(v, list):
        for x in v:
            yield from _leaves(x)
    else:
        yield v


def _check_options(kind: StepKind, method: str | None, options: dict, base: tuple, problems: _Problems) -> None:
    try:
        model_cls = kind.options_model(method)
    except ImportError as exc:  # the library behind this kind is not installed/implemented
        problems.add(base + ("kind",), f"{kind.name} steps are not available here: {exc}")
        return
    except Exception as exc:
        problems.add(base + ("method",), str(exc))
        return
    if model_cls is None:
        return
    filled, unknown = placeholder_options(kind, base[1], options)
    _, found = option_problems(model_cls, filled, prefix=base + ("options",))
    for path, message in found:
        field_name = path[len(base) + 1] if len(path) > len(base) + 1 else None
        if (field_name in unknown and message == MISSING) or problems.near(path[: len(base) + 2]):
            continue
        problems.add(path, message)


def _check_inputs_exist(kind: StepKind, options: dict, base: tuple, problems: _Problems) -> None:
    """Input files and models named directly (not made by an earlier step) must be there now."""
    from gptctl.errors import GptctlError
    from gptctl.model_source import resolve_model

    for name in kind.path_options:
        values = options.get(name)
        for i, value in enumerate(values if isinstance(values, list) else [values]):
            path = base + ("options", name) + ((i,) if isinstance(values, list) else ())
            if isinstance(value, str) and "${" not in value and not Path(value).expanduser().exists():
                if not problems.near(path):
                    problems.add(path, f"{value}: no such file")
    model = options.get("model")
    if (
        kind.takes_model
        and isinstance(model, str)
        and "${" not in model
        and not problems.near(base + ("options", "model"))
    ):
        try:
            resolve_model(model)
        except GptctlError as exc:
            problems.add(base + ("options", "model"), exc.message + (f" ({exc.hint})" if exc.hint else ""))


def _check_gates(raw: Any, problems: _Problems, steps: list[Step], variables: dict) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.add(("gates",), "must be a list of expressions, e.g. - steps.tune.metrics.ppl_after < 20")
        return []
    names = [s.name for s in steps]
    out = []
    for i, expr in enumerate(raw):
        path = ("gates", i)
        if not isinstance(expr, str):
            problems.add(path, f"a gate is an expression in quotes, got a {type(expr).__name__}")
            continue
        try:
            tree = gate_lang.parse(expr)
        except gate_lang.GateSyntaxError as exc:
            problems.add(path, f"{exc} (at column {exc.position + 1} of: {expr})")
            continue
        for ref in gate_lang.paths(tree):
            _check_gate_path(ref, path, problems, names, variables)
        out.append(expr)
    return out


def _check_gate_path(ref: str, path: tuple, problems: _Problems, names: list[str], variables: dict) -> None:
    from gptctl.recipe.refs import STEP_ATTRS

    parts = ref.split(".")
    if parts[0] == "steps":
        if len(parts) < 3:
            problems.add(
                path,
                f"{ref}: say what to read from the step, e.g. steps.{parts[1] if len(parts) > 1 else 'NAME'}.metrics.X",
            )
        elif parts[1] not in names:
            problems.add(path, f"{ref}: there is no step {parts[1]!r}{did_you_mean(parts[1], names)}")
        elif parts[2] not in STEP_ATTRS:
            problems.add(path, f"{ref}: a step has no {parts[2]!r}{did_you_mean(parts[2], STEP_ATTRS)}")
    elif parts[0] == "vars":
        if len(parts) < 2 or parts[1] not in variables:
            problems.add(path, f"{ref}: no such variable{did_you_mean(parts[-1], variables)}")
    else:
        problems.add(
            path,
            f"{ref}: a gate reads steps.NAME... or vars.NAME, not {parts[0]!r}"
            + did_you_mean(parts[0], ("steps", "vars")),
        )


__all__ = ["Recipe", "Step", "load_recipe", "parse_recipe", "placeholder_options", "model_path"]
