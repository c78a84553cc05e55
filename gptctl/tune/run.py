"""The study loop: ask Optuna for a trial, run it through the recipe runner, tell Optuna, repeat.

Stops at --trials (counting every finished trial of the study, so --resume continues towards the same
total), at the time budget (a running trial finishes), when a grid is exhausted, or when `stop` is set
(the CLI sets it on Ctrl-C: the running trial finishes first). A second Ctrl-C interrupts the running
trial (it is recorded as failed) and everything made so far is kept and reported.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.errors import CheckFailed, GptctlError, Interrupted
from gptctl.progress import NULL_PROGRESS, Progress
from gptctl.recipe.runner import StepReport
from gptctl.recipe.schema import Recipe
from gptctl.recipe.steps import KINDS, StepKind
from gptctl.tune import report as tune_report
from gptctl.tune.machine import machine_fingerprint
from gptctl.tune.retime import retime_trials
from gptctl.tune.space import SearchSpace
from gptctl.tune.store import SharedStore
from gptctl.tune.study import make_sampler, open_study, storage_for
from gptctl.tune.trial import TrialResult, run_trial, slotted_kinds

TRIALS_LOG = "trials.jsonl"
BENCH_SLOT = "bench-slot"  # the flock every timed step holds: no two trials' benchmarks overlap


@dataclass
class TuneOptions:
    output: Path
    trials: int = 20
    time_budget_s: float | None = None
    sampler: str = "tpe"
    storage: str | None = None  # None: DIR/study.journal
    resume: bool = False
    seed: int = 0
    backend: str = "local"  # local | ray (gptctl.tune.ray_backend)
    cpus_per_trial: float = 1.0  # ray: the CPUs each trial reserves (so concurrency = cluster CPUs / this)
    ray_address: str | None = None  # ray: an existing cluster ("auto", "ray://host:10001"); None: a local one
    retime: bool = True  # benchmark the front's artifacts again at the end (gptctl.tune.retime)


@dataclass
class TuneResult:
    recipe: str
    output: str
    study: str
    space: dict[str, Any]
    trials: list[TrialResult]
    front: list[dict[str, Any]]
    nearest_misses: list[dict[str, Any]]
    machine: dict[str, Any]
    stop_reason: str = ""
    interrupted: bool = False
    wall_s: float = 0.0
    files: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> GptctlError | None:
        if self.interrupted:
            return Interrupted(
                f"interrupted after {len(self.trials)} trials; the front so far is in {self.output}",
                "run the same command with --resume to continue the study",
            )
        if not self.front:
            return CheckFailed(
                f"no trial passed every gate ({len(self.trials)} trials); the nearest misses are listed",
                f"see {self.files.get('report', self.output)}; widen the search space or relax a gate",
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "output": self.output,
            "study": self.study,
            "space": self.space,
            "trials": [t.to_dict() for t in self.trials],
            "front": self.front,
            "nearest_misses": self.nearest_misses,
            "machine": self.machine,
            "stop_reason": self.stop_reason,
            "interrupted": self.interrupted,
            "wall_s": round(self.wall_s, 3),
            "files": self.files,
        }


def parse_duration(text: str) -> float:
    """'30m', '90s', '1h30m', '2h', or plain seconds -> seconds. ValueError for anything else."""
    import re

    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if not text or not parts or not any(parts.groups()):
        raise ValueError(f"{text!r} is not a duration (e.g. 30m, 90s, 1h30m)")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    return h * 3600 + m * 60 + s


def tune_recipe(
    recipe: Recipe,
    space: SearchSpace,
    options: TuneOptions,
    *,
    kinds: Mapping[str, StepKind] | None = None,
    progress: Progress = NULL_PROGRESS,
    on_trial: Callable[[TrialResult], None] | None = None,
    on_event: Callable[[str, StepReport], None] | None = None,
    stop: threading.Event | None = None,
) -> TuneResult:
    """Run the study and write DIR/trials.jsonl, DIR/front.json, DIR/front/NN.yaml and DIR/report.html."""
    out = Path(options.output)
    out.mkdir(parents=True, exist_ok=True)
    sampler = make_sampler(options.sampler, space, seed=options.seed, trials=options.trials)
    params = {p.path: p for p in space.params}
    baseline = {k: v for k, v in space.baseline().items() if params[k].contains(v)}
    storage = storage_for(options.storage, out)
    study = open_study(
        space,
        recipe.name,
        storage=storage,
        sampler=sampler,
        resume=options.resume,
        baseline=baseline,
    )
    trial_kinds = slotted_kinds(kinds if kinds is not None else KINDS, out / BENCH_SLOT)
    start = time.monotonic()
    stop = stop or threading.Event()
    ctx = StudyRun(
        recipe, space, study, storage, sampler, options, trial_kinds, start, stop, progress, on_trial, on_event
    )
    reason, interrupted = _run_on_ray(ctx) if options.backend == "ray" else _run_here(ctx)
    interrupted = interrupted or stop.is_set()  # Ctrl-C, even when it waited for the running trial
    trials = [TrialResult.from_dict(t.user_attrs["record"]) for t in study.get_trials() if "record" in t.user_attrs]
    front_numbers = _front(study)
    result = TuneResult(
        recipe.name,
        str(out),
        study.study_name,
        space.to_dict(),
        trials,
        [],
        [],
        machine_fingerprint(),
        reason,
        interrupted,
        time.monotonic() - start,
    )
    retimed = {}
    if options.retime and not interrupted:
        chosen = tune_report.distinct_front(trials, front_numbers)
        chosen += [t for t in trials if t.baseline and t.state == "complete" and t not in chosen]
        retimed = retime_trials(recipe, chosen, out / BENCH_SLOT)
    tune_report.write_outputs(result, recipe, space, front_numbers, retimed)
    return result


@dataclass
class StudyRun:
    """What a backend needs to run the study's trials."""

    recipe: Recipe
    space: SearchSpace
    study: Any
    storage: Any  # the study's Optuna storage object
    sampler: Any
    options: TuneOptions
    kinds: Mapping[str, StepKind]  # with the benchmark slot (slotted_kinds)
    start: float
    stop: threading.Event
    progress: Progress
    on_trial: Callable[[TrialResult], None] | None
    on_event: Callable[[str, StepReport], None] | None

    def why_stop(self) -> str:
        return _why_stop(self.study, self.sampler, self.options, self.start, self.stop)


def _run_here(ctx: StudyRun) -> tuple[str, bool]:
    """Trials one after another in this process. Returns (why it stopped, interrupted)."""
    loop = _Loop(ctx.recipe, ctx.space, Path(ctx.options.output), ctx.kinds, ctx.progress, ctx.on_event)
    try:
        while not (reason := ctx.why_stop()):
            result = loop.trial(ctx.study)
            if ctx.on_trial:
                ctx.on_trial(result)
            if result.state == "interrupted":
                return "interrupted (Ctrl-C)", True
    except KeyboardInterrupt:
        return "interrupted (Ctrl-C)", True
    return reason, False


def _run_on_ray(ctx: StudyRun) -> tuple[str, bool]:
    """The trials on Ray Tune (gptctl.tune.ray_backend), recorded the same way as here."""
    from gptctl.tune.ray_backend import run_on_ray

    if reason := ctx.why_stop():
        return reason, False
    try:
        run_on_ray(ctx, record_trial)
    except KeyboardInterrupt:
        return "interrupted (Ctrl-C)", True
    return ctx.why_stop() or "Ray Tune ran no more trials (time budget or a failed trial)", False


def _why_stop(study, sampler, options: TuneOptions, start: float, stop: threading.Event) -> str:
    finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    if stop.is_set():
        return "stopped (Ctrl-C) after the running trial"
    if finished >= options.trials:
        return f"{options.trials} trials"
    if options.time_budget_s is not None and time.monotonic() - start >= options.time_budget_s:
        return f"time budget ({options.time_budget_s:g}s) spent"
    if hasattr(sampler, "is_exhausted") and sampler.is_exhausted(study):
        return "the grid is exhausted"
    return ""


def _front(study) -> list[int]:
    """Numbers of the feasible, non-dominated trials (Optuna leaves infeasible ones out)."""
    try:
        return sorted(t.number for t in study.best_trials)
    except ValueError:
        return []


class _Loop:
    def __init__(self, recipe, space, out: Path, kinds, progress, on_event):
        self.recipe, self.space, self.out, self.kinds = recipe, space, out, kinds
        self.progress, self.on_event = progress, on_event
        self.store = SharedStore(out / "cache")

    def trial(self, study) -> TrialResult:
        from optuna.trial import TrialState

        trial = study.ask()
        try:
            params = self.space.sample(trial)
            result = run_trial(
                self.recipe,
                self.space,
                params,
                trial.number,
                self.out / "trials" / f"{trial.number:04d}",
                kinds=self.kinds,
                store=self.store,
                progress=self.progress,
                on_event=self.on_event,
            )
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        values, state = record_trial(trial, result, self.space, self.out)
        study.tell(trial, values, state=state)
        return result


def record_trial(trial, result: TrialResult, space: SearchSpace, out: Path):
    """Put a finished trial's figures on its Optuna trial (constraints, the record) and in trials.jsonl;
    return the (values, state) to tell the study. Both backends record a trial this way."""
    from optuna.trial import TrialState

    result.baseline = bool(trial.user_attrs.get("baseline"))
    for key, value in result.constraints.items():
        trial.set_constraint(key, value)
    trial.set_user_attr("record", result.to_dict())
    with (Path(out) / TRIALS_LOG).open("a") as f:
        f.write(json.dumps(result.to_dict(), default=str) + "\n")
    if result.state == "complete":
        return [result.objectives[o.name] for o in space.objectives], TrialState.COMPLETE
    return None, TrialState.PRUNED if result.state == "stopped" else TrialState.FAIL
