"""Running a validated recipe: one folder per step under the workdir, cached steps skipped, gates checked.

The runner never prints: it reports through `progress` (the CLI draws bars) and `on_event`
(the CLI prints one line per step), and returns a `RunReport` the CLI renders or dumps as JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gptctl import __version__
from gptctl.errors import EXIT_FAILED, EXIT_OK, BadInput, CheckFailed, GptctlError, Interrupted, exit_code_for
from gptctl.manifest import read_manifest
from gptctl.options import option_problems
from gptctl.outputs import remove_leftovers
from gptctl.progress import NULL_PROGRESS, Progress
from gptctl.recipe import cache, history
from gptctl.recipe.gates import GateResult, evaluate
from gptctl.recipe.lock import holder, workdir_lock
from gptctl.recipe.refs import Ref, find_refs, substitute, walk_strings
from gptctl.recipe.schema import Recipe, Step
from gptctl.recipe.steps import KINDS, StepKind, StepRun, model_path
from gptctl.yamlfile import format_path


@dataclass
class StepReport:
    """One step's outcome. status: ran | cached | failed | interrupted (Ctrl-C) | not-run (after a
    failure) | would-run (dry run). A cached step's `produced_by` names the run that made its result."""

    name: str
    kind: str
    method: str | None
    status: str = "not-run"
    reason: str = ""
    duration_s: float = 0.0
    output: str = ""
    model: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    error: str | None = None
    produced_by: dict[str, Any] | None = None  # cached: {"run", "summary", "duration_s", "finished"}

    @property
    def metrics(self) -> dict[str, Any]:
        return dict((self.manifest or {}).get("metrics") or {})

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "method": self.method,
            "status": self.status,
            "reason": self.reason,
            "duration_s": round(self.duration_s, 3),
            "output": self.output,
            "metrics": self.metrics,
        }
        for key in ("validation", "benchmark"):
            if self.manifest and key in self.manifest:
                d[key] = self.manifest[key]
        if self.produced_by:
            d["produced_by"] = self.produced_by
        if self.error:
            d["error"] = self.error
        return d


@dataclass
class RunReport:
    recipe: str
    workdir: str
    steps: list[StepReport]
    gates: list[GateResult]
    dry_run: bool = False
    error: GptctlError | None = None
    run_id: str | None = None  # this run's name in WORKDIR/summaries/ (None: a dry run)
    summary_path: str | None = None  # WORKDIR/summaries/RUN.json, also copied to WORKDIR/summary.json
    busy: dict[str, Any] | None = None  # dry run: the live run holding the workdir (pid, started), if any

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and all(s.status in ("ran", "cached") for s in self.steps)
            and all(g.passed for g in self.gates)
        )

    @property
    def exit_code(self) -> int:
        if self.dry_run:
            return EXIT_OK
        if self.error is not None:
            return exit_code_for(self.error)
        return EXIT_OK if self.passed else EXIT_FAILED

    def to_dict(self) -> dict[str, Any]:
        d = {
            "recipe": self.recipe,
            "workdir": self.workdir,
            "dry_run": self.dry_run,
            "steps": [s.to_dict() for s in self.steps],
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed if not self.dry_run else None,
            "gptctl_version": __version__,
        }
        if self.run_id:
            d.update(run=self.run_id, summary=self.summary_path)
        if self.busy:
            d["busy"] = self.busy
        if self.error is not None:
            d["error"] = self.error.message
        return d


class StopRun(CheckFailed):
    """Raised by an `on_event` callback after a step finished ("done"/"cached") to stop the run there:
    that step keeps its result, later steps are "not-run", and the report carries this error (exit 1).
    `gptctl tune` stops a trial this way once a gate has already failed by a clear margin."""


class StepStore(Protocol):
    """Step outputs shared between workdirs, by fingerprint (`gptctl tune`'s trials share one store).

    `fetch` says where the stored output of a step with this fingerprint is (None: not stored); the
    runner links the step's folder to it. `put` adopts a freshly made output (it may move it and leave
    a link at `out`)."""

    def fetch(self, fingerprint: str) -> Path | None: ...

    def put(self, fingerprint: str, out: Path) -> None: ...


def default_workdir(recipe: Recipe) -> Path:
    return Path("runs") / recipe.name


def run_recipe(
    recipe: Recipe,
    workdir: str | Path | None = None,
    *,
    force: bool = False,
    dry_run: bool = False,
    resume: bool = True,
    wait_s: float = 0.0,
    kinds: Mapping[str, StepKind] | None = None,
    progress: Progress = NULL_PROGRESS,
    on_event: Callable[[str, StepReport], None] | None = None,
    store: StepStore | None = None,
) -> RunReport:
    """Run (or, with `dry_run`, plan) a validated recipe and evaluate its gates.

    Each step writes to WORKDIR/NAME/. A step whose input contents, options and gptctl version
    match its last finished run is reused ("cached"); `force` reruns everything. A training step
    that was interrupted or killed continues from its checkpoint when its inputs and options are the
    same (`resume=False` starts it over). A step that fails stops the run: later steps are "not-run"
    and gates are not evaluated; Ctrl-C stops it the same way (`report.error` is `Interrupted`).

    One run at a time per workdir: a second waits up to `wait_s` seconds for the first, then raises
    `BadInput` naming the run that holds it. Every run writes WORKDIR/summaries/RUN.json and copies it
    to WORKDIR/summary.json (the latest).

    `store` shares step outputs between workdirs: a step the workdir has no valid result for is taken
    from it when the store holds one with the same fingerprint, and every step run here is put in it.
    """
    workdir = Path(workdir) if workdir is not None else default_workdir(recipe)
    report = RunReport(recipe.name, str(workdir), [], [], dry_run=dry_run)
    ctx = _Context(
        workdir,
        kinds if kinds is not None else KINDS,
        force,
        dry_run,
        resume and not force,
        progress,
        on_event or (lambda event, step: None),
        store,
    )
    if dry_run:
        report.busy = holder(workdir)
        _run_steps(recipe, ctx, report)
        return report
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lock(workdir, recipe=recipe.name, wait_s=wait_s):
        # Holding the lock, every work folder of these steps is a dead run's: none is being written.
        for step in recipe.steps:
            remove_leftovers(workdir / step.name)
        report.run_id = ctx.run_id = history.new_run_id(workdir)
        report.summary_path = str(history.summary_file(workdir, report.run_id))
        _run_steps(recipe, ctx, report)
        history.write_summaries(workdir, report.run_id, report.to_dict())
    return report


@dataclass
class _Context:
    """What every step of one run shares."""

    workdir: Path
    kinds: Mapping[str, StepKind]
    force: bool
    dry_run: bool
    resume: bool
    progress: Progress
    emit: Callable[[str, StepReport], None]
    store: StepStore | None = None
    run_id: str = ""
    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> manifest, output, model, identity


def _run_steps(recipe: Recipe, ctx: _Context, report: RunReport) -> None:
    overall = ctx.progress.task(f"recipe {recipe.name}", total=len(recipe.steps))
    for step in recipe.steps:
        kind = ctx.kinds[step.kind]
        out = ctx.workdir / step.name
        rep = StepReport(step.name, step.kind, step.method, output=str(out), model=str(model_path(kind, out)))
        report.steps.append(rep)
        if report.error is not None:
            continue
        overall.update(0, step=f"{step.name} ({step.kind}{' ' + step.method if step.method else ''})")
        try:
            _plan_or_run(step, kind, rep, ctx)
        except StopRun as exc:  # the step finished; the caller wants no more
            report.error = exc
        except GptctlError as exc:
            rep.status, rep.error = "failed", exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            report.error = exc
            ctx.emit("failed", rep)
        except KeyboardInterrupt:
            rep.status, rep.error = "interrupted", "interrupted (Ctrl-C)"
            report.error = Interrupted(f"interrupted during step {step.name}", _resume_hint(kind, step, out))
            ctx.emit("interrupted", rep)
        except Exception as exc:  # a bug or a library failure: report it as this step's failure
            rep.status, rep.error = "failed", f"{type(exc).__name__}: {exc}"
            report.error = CheckFailed(
                f"step {step.name} failed: {rep.error}", "run again with `gptctl --debug run ...` for the traceback"
            )
            report.error.__cause__ = exc
            ctx.emit("failed", rep)
        overall.update(1)
    overall.close()
    report.gates = _gates(recipe, ctx.done, report, ctx.dry_run)


def _resume_hint(kind: StepKind, step: Step, out: Path) -> str:
    if kind.checkpoint is not None and kind.checkpoint(out).is_file():
        return (
            f"run the same command again: finished steps are reused and {step.name} resumes from its "
            f"checkpoint ({kind.checkpoint(out)}); --no-resume starts it over"
        )
    return f"run the same command again: finished steps are reused and {step.name} starts over"


def _plan_or_run(step: Step, kind: StepKind, rep: StepReport, ctx: _Context) -> None:
    out, workdir = Path(rep.output), ctx.workdir
    pending: list[str] = []  # earlier steps whose results are not known (dry run)
    resolved = _resolve(step, ctx.done, pending)
    rep.options = resolved
    if pending:
        rep.status, rep.reason = "would-run", f"after {', '.join(sorted(set(pending)))} (its inputs are not made yet)"
        ctx.emit("plan", rep)
        return

    record = _record(step, kind, resolved, ctx.done)
    prev = cache.read_state(workdir, step.name)
    interrupted = cache.interrupted_run(workdir, step.name)
    reason = "--force" if ctx.force else cache.why_rerun(prev, record, out, interrupted is not None)
    if reason is None:
        manifest = read_manifest(out)
        if manifest is None:
            reason = f"no gptctl.json in {out}"
    if reason is None:
        since = prev.get("finished", "?")
        rep.status, rep.reason = "cached", f"inputs, options and gptctl version unchanged since {since}"
        rep.produced_by = history.produced_by(prev)
        _finish(ctx.done, rep, manifest, prev["fingerprint"], prev["output_sha256"])
        ctx.emit("cached", rep)
        return
    if not ctx.dry_run and not ctx.force and ctx.store is not None and _from_store(step, rep, ctx, record):
        return
    resuming, note = _resume_decision(step, kind, out, interrupted, record["fingerprint"], ctx.resume)
    rep.reason = f"interrupted last time; {note}" if resuming else (f"{reason}; {note}" if note else reason)
    if ctx.dry_run:
        rep.status = "would-run"
        ctx.emit("plan", rep)
        return
    _execute(step, kind, rep, ctx, _validated_options(step, kind, resolved, out, resuming), record)


def _execute(step: Step, kind: StepKind, rep: StepReport, ctx: _Context, options: Any, record: dict) -> None:
    out, workdir = Path(rep.output), ctx.workdir
    cache.mark_running(workdir, step.name, record["fingerprint"], ctx.run_id)
    # The previous result is out of date from here on: a killed run must not leave it looking finished.
    history.discard_output(out)
    ctx.emit("start", rep)
    start = time.perf_counter()
    try:
        manifest = kind.execute(
            StepRun(step.name, step.method, options, out, step.sources, _StepProgress(ctx.progress, step.name))
        )
    except Exception:
        cache.clear_running(workdir, step.name)  # failed, not interrupted: the next run says why it reruns
        raise
    finally:
        rep.duration_s = time.perf_counter() - start
    manifest = manifest or read_manifest(out)
    if manifest is None or not out.exists():
        raise GptctlError(f"step {step.name} finished without writing {out}/gptctl.json")
    output_sha = cache.content_hash(out)
    cache.write_state(
        workdir,
        step.name,
        {
            **record,
            "output_sha256": output_sha,
            "output_signature": cache.signature(out),
            "duration_s": rep.duration_s,
            "run": ctx.run_id,
        },
    )
    cache.clear_running(workdir, step.name)
    if ctx.store is not None:
        ctx.store.put(record["fingerprint"], out)
    rep.status = "ran"
    _finish(ctx.done, rep, manifest, record["fingerprint"], output_sha)
    ctx.emit("done", rep)


def _from_store(step: Step, rep: StepReport, ctx: _Context, record: dict) -> bool:
    """Reuse the shared store's output of a step with this fingerprint (recorded as this workdir's)."""
    out = Path(rep.output)
    stored = ctx.store.fetch(record["fingerprint"])
    if stored is None or read_manifest(stored) is None:
        return False
    history.discard_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.symlink_to(Path(stored).resolve(), target_is_directory=True)
    manifest = read_manifest(out)
    output_sha = cache.content_hash(out)
    state = {**record, "output_sha256": output_sha, "output_signature": cache.signature(out), "run": ctx.run_id}
    cache.write_state(ctx.workdir, step.name, {**state, "duration_s": 0.0, "shared": True})
    rep.status, rep.reason = "cached", "the same step (same fingerprint) ran before; its output is shared"
    _finish(ctx.done, rep, manifest, record["fingerprint"], output_sha)
    ctx.emit("cached", rep)
    return True


def _resume_decision(
    step: Step, kind: StepKind, out: Path, interrupted: dict | None, fingerprint: str, allowed: bool
) -> tuple[bool, str]:
    """Whether the step continues from the checkpoint an interrupted run left, and what to say about it.

    Only the checkpoint of a run with this very fingerprint (inputs, options, gptctl version) resumes:
    the training loop would refuse any other (gptctl.optimize.train), so it is started over instead.
    """
    if kind.checkpoint is None or interrupted is None or not _takes_resume(kind, step):
        return False, ""
    ckpt = kind.checkpoint(out)
    if not ckpt.is_file():
        return False, ""
    if interrupted.get("fingerprint") != fingerprint:
        return False, "its checkpoint was made with other inputs or options: starting over"
    if not allowed:
        return False, "starting over (--no-resume or --force), its checkpoint is discarded"
    return True, f"resuming from its checkpoint ({ckpt})"


def _takes_resume(kind: StepKind, step: Step) -> bool:
    return "resume" in getattr(kind.options_model(step.method), "model_fields", {})


class _StepProgress:
    """Passes a step's progress through, labelled with the step's name ("tune: training")."""

    def __init__(self, inner: Progress, name: str):
        self.inner, self.name = inner, name

    def task(self, description: str, total: float | None = None):
        return self.inner.task(f"{self.name}: {description}", total)

    def info(self, message: str) -> None:
        self.inner.info(f"{self.name}: {message}")


def _finish(done: dict, rep: StepReport, manifest: dict, fingerprint: str, output_sha: str) -> None:
    """Record a finished (or reused) step for the references, fingerprints and gates of later ones."""
    rep.manifest = manifest
    # Later steps get absolute paths: a training step's checkpoint records its model path, so the same
    # workdir named as `w` or /abs/w must give the same options for a resume to be accepted.
    done[rep.name] = {
        "manifest": manifest,
        "output": str(Path(rep.output).resolve()),
        "model": str(Path(rep.model).resolve()),
        "identity": {"fingerprint": fingerprint, "output_sha256": output_sha},
    }


def _resolve(step: Step, done: dict, pending: list[str], *, keep_paths: bool = False) -> dict[str, Any]:
    """The step's options with earlier steps' paths and manifest values filled in.

    Steps not finished yet (a dry run) are added to `pending` and their references left as written;
    `keep_paths` leaves ${steps.X.model}/${steps.X.output} as written (for the cache record).
    """

    def resolve(ref: Ref) -> Any:
        name = ref.step
        if name not in done:
            pending.append(name)
            return ref.text
        if ref.is_path:
            return ref.text if keep_paths else done[name][ref.parts[1]]
        try:
            return _dig(done[name]["manifest"], ref.parts[1:], f"{name}'s manifest", f"steps.{name}")
        except KeyError as exc:
            raise BadInput(
                f"step {step.name}: {ref.text}: {exc.args[0]}",
                f"see {done[name]['output']}/gptctl.json for what it records",
            ) from None

    return substitute(step.options, resolve)


def _record(step: Step, kind: StepKind, resolved: dict[str, Any], done: dict) -> dict[str, Any]:
    """What the cache compares: kind, method, options, the content of every input, gptctl's version.

    Earlier steps' paths enter as that step's own fingerprint and output hash (not the path), so a
    changed upstream step reruns its dependents and moving the workdir does not.
    """
    inputs: dict[str, Any] = {}
    for path, text in walk_strings(step.options):
        key = format_path(path)
        upstream = [r.step for r in find_refs(text) if r.is_path]
        if upstream:
            inputs[key] = [{"step": u, **done[u]["identity"]} for u in upstream]
            continue
        value = _get(resolved, path)
        if not isinstance(value, str):
            continue
        if path == ("model",):
            inputs[key] = cache.model_identity(value)
        elif value.startswith("pkg:") or _is_local(value):
            inputs[key] = _path_identity(value)
    for key, value in (kind.implicit_inputs(resolved) if kind.implicit_inputs else {}).items():
        inputs[key] = _path_identity(value) if _is_local(value) else {"missing": value}
    sources = {k: cache.model_identity(v) for k, v in step.sources.items()}
    rec = {
        "kind": step.kind,
        "method": step.method,
        "options": _resolve(step, done, [], keep_paths=True),
        "inputs": inputs,
        "sources": sources,
        "gptctl_version": __version__,
    }
    rec["fingerprint"] = cache.fingerprint(rec)
    return rec


def _get(value: Any, path: tuple) -> Any:
    for p in path:
        value = value[p]
    return value


def _is_local(value: str) -> bool:
    try:
        return len(value) < 4096 and Path(value).expanduser().exists()
    except OSError:
        return False


def _path_identity(value: str) -> dict[str, Any]:
    if value.startswith("pkg:"):
        return cache.model_identity(value)
    return {"sha256": cache.content_hash(Path(value).expanduser())}


def _validated_options(step: Step, kind: StepKind, resolved: dict[str, Any], out: Path, resuming: bool) -> Any:
    """Validate the resolved options with the kind's own options class (values from earlier steps
    are only known now), with the runner's fields filled in (`resume` is the runner's decision)."""
    data = dict(resolved)
    if "output" in kind.runner_fields:
        data["output"] = str(out)
    if "overwrite" in kind.runner_fields:
        data["overwrite"] = True
    if kind.checkpoint is not None and _takes_resume(kind, step):
        data["resume"] = resuming
    instance, problems = option_problems(kind.options_model(step.method), data, prefix=("steps", step.name, "options"))
    if problems:
        raise BadInput(
            f"step {step.name}: invalid options once earlier results were filled in",
            "check the values the references point to",
            details=[f"{format_path(p)}: {m}" for p, m in problems],
        )
    return instance


def lookup_in(recipe: Recipe, done: dict) -> Callable[[str], Any]:
    """Resolve a gate's dotted path against the manifests of finished steps and the recipe's vars."""

    def lookup(path: str) -> Any:
        parts = path.split(".")
        if parts[0] == "vars":
            node, start, where = recipe.vars, 1, "vars"
        else:
            name = parts[1]
            if name not in done:
                raise KeyError(f"{path}: step {name} has no result")
            entry = done[name]
            if parts[2] in ("model", "output") and len(parts) == 3:
                return entry[parts[2]]
            node, start, where = entry["manifest"], 2, f"{name}'s manifest"
        return _dig(node, parts[start:], where, ".".join(parts[:start]))

    return lookup


def _dig(node: Any, parts: list[str] | tuple[str, ...], where: str, prefix: str) -> Any:
    """Follow dotted `parts` (keys, list indices) into a manifest; KeyError says what is there instead."""
    for i, part in enumerate(parts):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            have = ", ".join(map(str, node)) if isinstance(node, dict) else type(node).__name__
            raise KeyError(f"{'.'.join([prefix, *parts[: i + 1]])}: not in {where} (it has: {have})")
    return node


def _gates(recipe: Recipe, done: dict, report: RunReport, dry_run: bool) -> list[GateResult]:
    if dry_run or report.error is not None:
        why = "dry run: not evaluated" if dry_run else "not evaluated: a step failed"
        return [GateResult(expr=g, passed=False, error=why) for g in recipe.gates]
    lookup = lookup_in(recipe, done)
    return [evaluate(g, lookup) for g in recipe.gates]
