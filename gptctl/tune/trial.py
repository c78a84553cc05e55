"""One trial: the recipe with the sampled values pinned, run by the recipe runner, scored and gated.

Gates become constraints (<= 0 feasible): a comparison `a <= b` gives (a - b) / |b|, how far it failed
(or, negative, by how much it passed) relative to its bound; any other gate gives 0 or 1. After every
step the gates whose steps are all done are evaluated: one failing by more than the study's
`stop_margin` stops the trial there (before training or exporting further), infeasible, its figure kept.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.errors import Interrupted
from gptctl.progress import NULL_PROGRESS, Progress
from gptctl.recipe import gates as gate_lang
from gptctl.recipe.lock import workdir_lock
from gptctl.recipe.runner import StepReport, StopRun, lookup_in, run_recipe
from gptctl.recipe.schema import Recipe
from gptctl.recipe.steps import KINDS, StepKind, StepRun
from gptctl.tune.space import SearchSpace

# Kinds whose step measures speed: they take the one benchmark slot, so no two trials' timings overlap.
TIMED_KINDS = ("export", "serve")


@dataclass
class TrialResult:
    """What one trial did. state: complete | stopped (a gate failed early) | failed | interrupted."""

    number: int
    params: dict[str, Any]
    state: str = "failed"
    objectives: dict[str, float] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)  # "gates[i]" -> value, <= 0 feasible
    gates: list[dict[str, Any]] = field(default_factory=list)  # expr, passed, detail, violation, error
    stopped_at: str | None = None
    error: str | None = None
    durations: dict[str, float] = field(default_factory=dict)  # step -> seconds it ran in this trial
    cache_hits: list[str] = field(default_factory=list)  # steps reused (this trial's or the shared cache)
    wall_s: float = 0.0
    workdir: str = ""
    recipe_file: str = ""
    baseline: bool = False

    @property
    def feasible(self) -> bool:
        return self.state == "complete" and all(v <= 0 for v in self.constraints.values())

    @property
    def violation(self) -> float:
        """How far the trial is from passing every gate (the sum of the positive constraints)."""
        return sum(max(v, 0.0) for v in self.constraints.values())

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(feasible=self.feasible, violation=round(self.violation, 6), wall_s=round(self.wall_s, 3))
        d["durations"] = {k: round(v, 3) for k, v in self.durations.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def pin(recipe: Recipe, params: Mapping[str, Any], name: str | None = None) -> Recipe:
    """A copy of the recipe with the parameters' values set and no `search:` (a plain recipe)."""
    pinned = copy.deepcopy(recipe)
    pinned.search, pinned.search_lines = None, {}
    if name:
        pinned.name = name
    for path, value in params.items():
        step, _, option = path.split(".", 2)
        pinned.step(step).options[option] = value
    return pinned


def recipe_yaml(recipe: Recipe, header: str = "") -> str:
    """The recipe as YAML that `gptctl run` reads back (variables and environment already filled in)."""
    import yaml

    steps = {}
    for s in recipe.steps:
        entry: dict[str, Any] = {"kind": s.kind}
        if s.method:
            entry["method"] = s.method
        entry["options"] = s.options
        if s.sources:
            entry["sources"] = s.sources
        steps[s.name] = entry
    data: dict[str, Any] = {"name": recipe.name}
    if recipe.description:
        data["description"] = recipe.description
    if recipe.vars:
        data["vars"] = recipe.vars
    data.update(steps=steps, gates=list(recipe.gates))
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body


def gate_violation(expr: str, lookup: Callable[[str], Any]) -> tuple[float, gate_lang.GateResult]:
    """The gate's constraint value (<= 0 passed) and its evaluation."""
    result = gate_lang.evaluate(expr, lookup)
    if result.error:
        return 1.0, result  # cannot be read: as far from passing as a failed true/false gate
    value = 0.0 if result.passed else 1.0
    try:
        sides = gate_lang.compared_sides(expr, lookup)
    except (gate_lang.GateSyntaxError, gate_lang.GateEvalError):
        sides = None
    if sides and sides[0] in ("<", "<=", ">", ">=") and all(_is_number(x) for x in sides[1:]):
        op, a, b = sides
        scale = abs(b) or abs(a) or 1.0
        value = (a - b) / scale if op in ("<", "<=") else (b - a) / scale
    if result.passed:
        value = min(value, 0.0)
    elif value <= 0:
        value = 1e-9  # `a < b` with a == b: failed, by nothing measurable
    return value, result


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def slotted_kinds(kinds: Mapping[str, StepKind], slot: Path) -> dict[str, StepKind]:
    """The kinds, with every timed one holding the benchmark slot (an flock on SLOT) while it runs."""

    def hold(execute: Callable[[StepRun], dict]) -> Callable[[StepRun], dict]:
        def run(step_run: StepRun) -> dict:
            with workdir_lock(slot, recipe="benchmark slot", wait_s=math.inf):
                return execute(step_run)

        return run

    return {n: dataclasses.replace(k, execute=hold(k.execute)) if n in TIMED_KINDS else k for n, k in kinds.items()}


class _Stager:
    """The runner's `on_event`: records durations and reuse, and stops the trial at a clear gate failure."""

    def __init__(self, recipe: Recipe, margin: float, result: TrialResult, forward):
        self.recipe, self.margin, self.result, self.forward = recipe, margin, result, forward
        self.done: dict[str, dict[str, Any]] = {}
        self.steps_of = {
            i: {p.split(".")[1] for p in gate_lang.paths(gate_lang.parse(g)) if p.startswith("steps.")}
            for i, g in enumerate(recipe.gates)
        }
        self.early: dict[int, tuple[float, gate_lang.GateResult]] = {}

    def __call__(self, event: str, rep: StepReport) -> None:
        self.forward(event, rep)
        if event not in ("done", "cached"):
            return
        self.result.durations[rep.name] = rep.duration_s
        if event == "cached":
            self.result.cache_hits.append(rep.name)
        self.done[rep.name] = {
            "manifest": rep.manifest,
            "output": str(Path(rep.output).resolve()),
            "model": str(Path(rep.model).resolve()),
        }
        lookup = lookup_in(self.recipe, self.done)
        for i, expr in enumerate(self.recipe.gates):
            if i in self.early or not self.steps_of[i] <= set(self.done):
                continue
            value, res = gate_violation(expr, lookup)
            self.early[i] = (value, res)
            if value > self.margin:
                self.result.stopped_at = rep.name
                why = res.error or res.detail or "false"
                raise StopRun(f"gate {expr} failed by {value:.1%} after step {rep.name} ({why}): trial stopped")


def objective_value(name: str, steps: list[StepReport], lookup: Callable[[str], Any]) -> float:
    """An objective's value in this trial; KeyError says why it cannot be read."""
    exports = [s for s in steps if s.kind == "export" and s.manifest]
    last = exports[-1] if exports else None
    if name == "ppl":
        if last is not None:
            m = last.metrics
            value = m.get("ppl_quantized", m.get("ppl_fp32"))
        else:
            opt = [s for s in steps if s.kind == "optimize" and s.manifest]
            value = opt[-1].metrics.get("ppl_after") if opt else None
        if value is None:
            raise KeyError("ppl: no export (ppl_quantized/ppl_fp32) or optimize (ppl_after) step measured it")
    elif name == "decode_tok_s":
        bench = ((last.manifest or {}).get("benchmark") or {}).get("cpu") or {} if last else {}
        value = bench.get("decode_tokens_per_s")
        if value is None:
            raise KeyError(
                "decode_tok_s: the last export step has no benchmark.cpu.decode_tokens_per_s (benchmark: true?)"
            )
    elif name == "size_mb":
        size = last.metrics.get("size_bytes") if last else None
        if size is None:
            raise KeyError("size_mb: no export step recorded metrics.size_bytes")
        value = size / 2**20
    else:
        value = lookup(name)
    if not _is_number(value):
        raise KeyError(f"{name}: {value!r} is not a number")
    return float(value)


def run_trial(
    recipe: Recipe,
    space: SearchSpace,
    params: dict[str, Any],
    number: int,
    workdir: Path,
    *,
    kinds: Mapping[str, StepKind] | None = None,
    store=None,
    progress: Progress = NULL_PROGRESS,
    on_event: Callable[[str, StepReport], None] | None = None,
) -> TrialResult:
    """Run one trial in WORKDIR (the pinned recipe is written there as recipe.yaml) and score it."""
    result = TrialResult(number, dict(params), workdir=str(workdir))
    pinned = pin(recipe, params)
    workdir.mkdir(parents=True, exist_ok=True)
    recipe_file = workdir / "recipe.yaml"
    recipe_file.write_text(recipe_yaml(pinned, f"gptctl tune: trial {number} of {recipe.name}"))
    result.recipe_file = str(recipe_file)
    stager = _Stager(pinned, space.stop_margin, result, on_event or (lambda e, s: None))
    start = time.perf_counter()
    report = run_recipe(
        pinned, workdir, kinds=kinds if kinds is not None else KINDS, progress=progress, on_event=stager, store=store
    )
    result.wall_s = time.perf_counter() - start
    lookup = lookup_in(pinned, stager.done)
    for i, expr in enumerate(pinned.gates):
        if i in stager.early:
            value, res = stager.early[i]
        elif report.error is None:
            value, res = gate_violation(expr, lookup)
        else:
            value, res = 0.0, gate_lang.GateResult(expr, False, error="not evaluated: the trial stopped first")
        result.constraints[f"gates[{i}]"] = value
        result.gates.append({**res.to_dict(), "violation": value})
    if isinstance(report.error, StopRun):
        result.state = "stopped"
        result.error = report.error.message
    elif isinstance(report.error, Interrupted):
        result.state, result.error = "interrupted", report.error.message
    elif report.error is not None:
        result.error = report.error.message
    else:
        _score(result, space, report.steps, lookup)
    return result


def _score(result: TrialResult, space: SearchSpace, steps: list[StepReport], lookup) -> None:
    try:
        result.objectives = {o.name: objective_value(o.name, steps, lookup) for o in space.objectives}
    except KeyError as exc:
        result.error = f"objective {exc.args[0]}"
        return
    result.state = "complete"
