"""The recipe's `search:` block: what `gptctl tune` varies, what it optimises, checked before any trial.

    search:
      space:
        prune.options.ratio: {float: [0.1, 0.5], step: 0.05}
        prune.options.method: [magnitude, wanda]
        tune.options.rank: {int: [4, 32], log: true}
        ship.options.quantize: [int4, int8]
        ship.options.block_size: {choices: [32, 64, 128], when: "ship.options.quantize == 'int4'"}
      objectives: {ppl: min, decode_tok_s: max, size_mb: min}
      stop_margin: 0.05

A key `STEP.options.OPTION` names one option of one step; its values are checked with that step's own
option declarations (types, choices, bounds), so a trial never fails on a value the recipe would refuse.
`when` is a gate expression (gptctl.recipe.gates) over other options: the parameter is searched only where
it holds, and keeps the recipe's value elsewhere. Objectives are short names (`ppl`, `decode_tok_s`,
`size_mb`, read from the last export step) or manifest paths (`steps.prune.metrics.sparsity_realised`).
Every problem is reported at once with file:line (`BadInput`, exit 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gptctl.errors import BadInput
from gptctl.options import option_problems
from gptctl.recipe import gates as gate_lang
from gptctl.recipe.refs import STEP_ATTRS
from gptctl.recipe.schema import Recipe, placeholder_options
from gptctl.recipe.steps import KINDS, StepKind
from gptctl.yamlfile import did_you_mean, format_path, line_of

SEARCH_KEYS = ("space", "objectives", "stop_margin")
# Short objective names and what they read (gptctl.tune.objective resolves them from the step manifests).
SHORT_OBJECTIVES = {
    "ppl": "held-out perplexity of the shipped graph (last export: ppl_quantized, else ppl_fp32)",
    "decode_tok_s": "decode tokens/s on CPU (last export's benchmark.cpu.decode_tokens_per_s)",
    "size_mb": "artifact size in MiB (last export's metrics.size_bytes)",
}
DIRECTIONS = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}
_TYPED_KEYS = {
    "int": ("int", "log", "step", "when"),
    "float": ("float", "log", "step", "when"),
    "choices": ("choices", "when"),
}
# A gate that fails by more than this (relative to its bound) stops a trial at once: 5% is outside the
# run-to-run noise of the perplexities and timings the gates compare.
DEFAULT_STOP_MARGIN = 0.05


@dataclass(frozen=True)
class Param:
    """One searched option: `path` is STEP.options.OPTION (also its name in the Optuna study)."""

    path: str
    step: str
    option: str
    kind: str  # categorical | int | float
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step_size: float | None = None
    when: str | None = None
    baseline: Any = None  # the recipe's value as written, else the option's default

    def values(self) -> list | None:
        """Every value it can take, or None for a continuous range."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step_size or 1)))
        if self.step_size is None:
            return None
        n = round((self.high - self.low) / self.step_size)
        return [round(self.low + i * self.step_size, 12) for i in range(n + 1)]

    def cardinality(self) -> float:
        values = self.values()
        return math.inf if values is None else len(values)

    def contains(self, value: Any) -> bool:
        values = self.values()
        if values is not None:
            return any(value == v and type(value) is type(v) or _close(value, v) for v in values)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.path, int(self.low), int(self.high), step=int(self.step_size or 1), log=self.log
            )
        return trial.suggest_float(self.path, self.low, self.high, step=self.step_size, log=self.log)

    def describe(self) -> str:
        if self.kind == "categorical":
            text = "one of " + ", ".join(map(str, self.choices))
        else:
            text = f"{self.kind} in [{self.low:g}, {self.high:g}]"
            text += (" log" if self.log else "") + (f" step {self.step_size:g}" if self.step_size else "")
        return text + (f" when {self.when}" if self.when else "")


@dataclass(frozen=True)
class Objective:
    name: str  # a short name (SHORT_OBJECTIVES) or a manifest path steps.NAME.ATTR...
    direction: str  # minimize | maximize


@dataclass
class SearchSpace:
    params: list[Param]
    objectives: list[Objective]
    stop_margin: float = DEFAULT_STOP_MARGIN
    fixed: dict[str, Any] = field(default_factory=dict)  # STEP.options.OPTION -> the recipe's value, for `when`

    def active(self, param: Param, values: Mapping[str, Any]) -> bool:
        """Whether `param` is searched given the values chosen so far (its `when` holds)."""
        if param.when is None:
            return True
        result = gate_lang.evaluate(param.when, lambda p: self._value(p, values))
        return result.passed

    def _value(self, path: str, values: Mapping[str, Any]) -> Any:
        key = _option_path(path)
        if key in values:
            return values[key]
        if key in self.fixed:
            return self.fixed[key]
        raise KeyError(f"{path}: not set in the recipe")

    def sample(self, trial) -> dict[str, Any]:
        """The trial's value of every active parameter, in declaration order."""
        values: dict[str, Any] = {}
        for p in self.params:
            if self.active(p, values):
                values[p.path] = p.suggest(trial)
        return values

    def baseline(self) -> dict[str, Any]:
        """The recipe as written, as parameter values (what is enqueued as the first trial)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if self.active(p, values) and p.baseline is not None:
                values[p.path] = p.baseline
        return values

    def size(self) -> float:
        """How many distinct configurations the space holds (math.inf with a continuous range)."""
        referenced = {_option_path(x) for p in self.params if p.when for x in gate_lang.paths(gate_lang.parse(p.when))}

        def count(i: int, values: dict[str, Any]) -> float:
            if i == len(self.params):
                return 1
            p = self.params[i]
            if not self.active(p, values):
                return count(i + 1, values)
            if p.path in referenced and p.values() is not None:
                return sum(count(i + 1, {**values, p.path: v}) for v in p.values())
            return p.cardinality() * count(i + 1, values)

        return count(0, {})

    def to_dict(self) -> dict[str, Any]:
        size = self.size()
        return {
            "params": [
                {"name": p.path, "type": p.kind, "domain": p.describe(), "when": p.when, "recipe_value": p.baseline}
                for p in self.params
            ],
            "objectives": {o.name: o.direction for o in self.objectives},
            "size": None if math.isinf(size) else int(size),
            "size_text": "unbounded (a continuous range has no step)"
            if math.isinf(size)
            else f"{int(size):,} configurations",
            "stop_margin": self.stop_margin,
        }


def _close(a: Any, b: Any) -> bool:
    num = (int, float)
    return isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and math.isclose(a, b, rel_tol=1e-9)


def _option_path(path: str) -> str:
    return path[len("steps.") :] if path.startswith("steps.") else path


class _Problems:
    def __init__(self, recipe: Recipe):
        self.recipe, self.items = recipe, []

    def add(self, path: tuple, message: str) -> None:
        self.items.append((path, message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        name = str(self.recipe.path) if self.recipe.path else self.recipe.name
        details = []
        for path, msg in sorted(self.items, key=lambda item: line_of(self.recipe.search_lines, item[0]) or 0):
            line = line_of(self.recipe.search_lines, path)
            details.append(
                f"{name}:{line}: {format_path(path)}: {msg}" if line else f"{name}: {format_path(path)}: {msg}"
            )
        n = len(details)
        raise BadInput(
            f"recipe {name}: the search block is invalid: {n} problem{'s' if n != 1 else ''}:",
            "fix them and run again (`gptctl tune RECIPE --dry-run` checks without running)",
            details=details,
        )


def parse_search(recipe: Recipe, kinds: Mapping[str, StepKind] | None = None) -> SearchSpace:
    """Check the recipe's `search:` block against its steps; raise BadInput (file:line) for every problem."""
    kinds = KINDS if kinds is None else kinds
    problems = _Problems(recipe)
    raw = recipe.search
    if raw is None:
        problems.add(("search",), "missing: `gptctl tune` needs a search: block with space: and objectives:")
        problems.raise_if_any()
    for key in raw:
        if key not in SEARCH_KEYS:
            problems.add(
                ("search", key),
                f"unknown key {key!r}{did_you_mean(str(key), SEARCH_KEYS)}; allowed: {', '.join(SEARCH_KEYS)}",
            )
    params = _check_space(raw.get("space"), recipe, kinds, problems)
    objectives = _check_objectives(raw.get("objectives"), recipe, problems)
    margin = raw.get("stop_margin", DEFAULT_STOP_MARGIN)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
        problems.add(
            ("search", "stop_margin"), f"a number >= 0 (a gate failing by more stops the trial), got {margin!r}"
        )
    problems.raise_if_any()
    fixed = {f"{s.name}.options.{k}": v for s in recipe.steps for k, v in s.options.items()}
    space = SearchSpace(params, objectives, float(margin), fixed)
    _check_conditions(space, problems)
    problems.raise_if_any()
    return space


def _check_space(raw: Any, recipe: Recipe, kinds, problems: _Problems) -> list[Param]:
    base = ("search", "space")
    if not isinstance(raw, dict) or not raw:
        problems.add(base, "a mapping of STEP.options.OPTION to values, e.g. prune.options.ratio: {float: [0.1, 0.5]}")
        return []
    params = []
    for key, spec in raw.items():
        path = base + (key,)
        target = _check_target(str(key), recipe, kinds, path, problems)
        if target is None:
            continue
        param = _check_spec(str(key), spec, path, problems, target)
        if param is not None and _check_values(param, recipe, kinds, path, problems):
            params.append(param)
    return params


def _check_target(key: str, recipe: Recipe, kinds, path: tuple, problems: _Problems):
    """(step, option, options class) for STEP.options.OPTION, or None after reporting why not."""
    parts = _option_path(key).split(".")
    names = [s.name for s in recipe.steps]
    if len(parts) != 3 or parts[1] != "options":
        problems.add(
            path, f"name an option as STEP.options.OPTION (e.g. {names[-1] if names else 'prune'}.options.ratio)"
        )
        return None
    if parts[0] not in names:
        problems.add(path, f"there is no step {parts[0]!r}{did_you_mean(parts[0], names)}; steps: {', '.join(names)}")
        return None
    step = recipe.step(parts[0])
    model = kinds[step.kind].options_model(step.method) if step.kind in kinds else None
    fields = dict(getattr(model, "model_fields", {}) or {})
    runner = kinds[step.kind].runner_fields if step.kind in kinds else ()
    known = [f for f in fields if f not in runner] or list(step.options)
    if parts[2] not in known:
        problems.add(path, f"step {step.name} has no option {parts[2]!r}{did_you_mean(parts[2], known)}")
        return None
    spec = fields.get(parts[2])
    default = step.options.get(parts[2], getattr(spec, "default", None))
    return step, parts[2], default


def _check_spec(key: str, spec: Any, path: tuple, problems: _Problems, target) -> Param | None:
    step, opt, baseline = target
    common = dict(path=_option_path(key), step=step.name, option=opt, baseline=baseline)
    if isinstance(spec, list):
        return _categorical(spec, path, problems, common)
    typed = [t for t in _TYPED_KEYS if isinstance(spec, dict) and t in spec]
    if len(typed) != 1:
        problems.add(path, "a list of choices, or one of {int: [lo, hi]}, {float: [lo, hi]}, {choices: [...]}")
        return None
    kind = typed[0]
    for k in spec:
        if k not in _TYPED_KEYS[kind]:
            problems.add(
                path + (k,),
                f"unknown key {k!r}{did_you_mean(str(k), _TYPED_KEYS[kind])}; allowed: {', '.join(_TYPED_KEYS[kind])}",
            )
    when = spec.get("when")
    if when is not None:
        try:
            gate_lang.parse(when) if isinstance(when, str) else None
        except gate_lang.GateSyntaxError as exc:
            problems.add(path + ("when",), f"{exc} (at column {exc.position + 1} of: {when})")
            when = None
        if not isinstance(when, (str, type(None))):
            problems.add(path + ("when",), "an expression in quotes, e.g. \"ship.options.quantize == 'int4'\"")
            when = None
    common["when"] = when
    if kind == "choices":
        return _categorical(spec["choices"], path + ("choices",), problems, common)
    return _ranged(kind, spec, path, problems, common)


def _categorical(choices: Any, path: tuple, problems: _Problems, common: dict) -> Param | None:
    if not isinstance(choices, list) or not choices:
        problems.add(path, "a non-empty list of choices")
        return None
    bad = [c for c in choices if not isinstance(c, (str, int, float, bool, type(None)))]
    if bad:
        problems.add(path, f"choices are single values (text, numbers, true/false), not {bad[0]!r}")
        return None
    if len({repr(c) for c in choices}) != len(choices):
        problems.add(path, "a choice appears twice")
        return None
    return Param(kind="categorical", choices=tuple(choices), **common)


def _ranged(kind: str, spec: dict, path: tuple, problems: _Problems, common: dict) -> Param | None:
    bounds, log, step = spec[kind], spec.get("log", False), spec.get("step")
    num = int if kind == "int" else (int, float)
    ok = (
        isinstance(bounds, list)
        and len(bounds) == 2
        and all(isinstance(b, num) and not isinstance(b, bool) for b in bounds)
    )
    if not ok or bounds[0] >= bounds[1]:
        problems.add(
            path + (kind,),
            f"[low, high] with low < high ({'integers' if kind == 'int' else 'numbers'}), got {bounds!r}",
        )
        return None
    if not isinstance(log, bool):
        problems.add(path + ("log",), "true or false")
        return None
    if step is not None and (isinstance(step, bool) or not isinstance(step, num) or step <= 0):
        problems.add(path + ("step",), f"a positive {'integer' if kind == 'int' else 'number'}, got {step!r}")
        return None
    if log and (bounds[0] <= 0 or step not in (None, 1)):
        problems.add(path + ("log",), "a log range needs low > 0 and no step (Optuna samples it continuously)")
        return None
    if (
        step is not None
        and kind == "float"
        and not math.isclose((bounds[1] - bounds[0]) / step, round((bounds[1] - bounds[0]) / step), abs_tol=1e-6)
    ):
        problems.add(path + ("step",), f"{step:g} does not divide [{bounds[0]:g}, {bounds[1]:g}] evenly")
        return None
    lo, hi = (float(b) for b in bounds) if kind == "float" else bounds
    return Param(kind=kind, low=lo, high=hi, log=log, step_size=step, **common)


def _check_values(param: Param, recipe: Recipe, kinds, path: tuple, problems: _Problems) -> bool:
    """Each choice (or both ends of a range) passes the step's own option checks."""
    step = recipe.step(param.step)
    kind = kinds[step.kind]
    model = kind.options_model(step.method)
    filled, _ = placeholder_options(kind, step.name, step.options)
    values = param.values() if param.kind == "categorical" else [param.low, param.high]
    for value in values:
        _, found = option_problems(model, {**filled, param.option: value})
        mine = [m for p, m in found if p[:1] == (param.option,)]
        if mine:
            problems.add(path, f"{value!r} is not a valid {step.name}.options.{param.option}: {mine[0]}")
            return False
    return True


def _check_objectives(raw: Any, recipe: Recipe, problems: _Problems) -> list[Objective]:
    base = ("search", "objectives")
    if not isinstance(raw, dict) or not raw:
        problems.add(base, "a mapping of objectives to min or max, e.g. {ppl: min, decode_tok_s: max}")
        return []
    names = [s.name for s in recipe.steps]
    out = []
    for name, direction in raw.items():
        path = base + (name,)
        if direction not in DIRECTIONS:
            problems.add(path, f"min or max, got {direction!r}")
            continue
        name = str(name)
        if name in SHORT_OBJECTIVES:
            out.append(Objective(name, DIRECTIONS[direction]))
            continue
        parts = name.split(".")
        if parts[0] != "steps":
            parts = ["steps", *parts]
        if len(parts) < 4 or parts[1] not in names or parts[2] not in STEP_ATTRS:
            problems.add(
                path,
                f"unknown objective {name!r}{did_you_mean(name, SHORT_OBJECTIVES)}: use {', '.join(SHORT_OBJECTIVES)} "
                "or a manifest path steps.STEP.metrics.NAME"
                + (f" (there is no step {parts[1]!r})" if len(parts) > 1 and parts[1] not in names else ""),
            )
            continue
        out.append(Objective(".".join(parts), DIRECTIONS[direction]))
    return out


def _check_conditions(space: SearchSpace, problems: _Problems) -> None:
    """A `when` reads options of the recipe or parameters declared before it."""
    declared: set[str] = set()
    for p in space.params:
        if p.when:
            for ref in gate_lang.paths(gate_lang.parse(p.when)):
                key = _option_path(ref)
                if key == p.path:
                    problems.add(
                        ("search", "space", p.path, "when"), f"{ref}: a parameter's condition cannot read itself"
                    )
                elif key in {q.path for q in space.params} and key not in declared:
                    problems.add(("search", "space", p.path, "when"), f"{ref}: declare that parameter before this one")
                elif key not in declared and key not in space.fixed:
                    problems.add(
                        ("search", "space", p.path, "when"),
                        f"{ref}: not an option of the recipe or a searched parameter",
                    )
        declared.add(p.path)
