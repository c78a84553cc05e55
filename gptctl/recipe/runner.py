"""Running a validated recipe: one folder per step under the workdir, cached steps skipped, gates checked.

The runner never prints: it reports through `progress` (the CLI draws bars) and `on_event`
(the CLI prints one line per step), and returns a `RunReport` the CLI renders or dumps as JSON.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from gptctl import __version__
from gptctl.errors import EXIT_FAILED, EXIT_OK, BadInput, GptctlError
from gptctl.manifest import read_manifest
from gptctl.options import option_problems
from gptctl.progress import NULL_PROGRESS, Progress
from gptctl.recipe import cache
from gptctl.recipe.gates import GateResult, evaluate
from gptctl.recipe.refs import Ref, find_refs, substitute, walk_strings
from gptctl.recipe.schema import Recipe, Step
from gptctl.recipe.steps import KINDS, StepKind, StepRun, model_path
from gptctl.yamlfile import format_path


@dataclass
class StepReport:
    """One step's outcome. status: ran | cached | failed | not-run (after a failure) |
    would-run (dry run)."""

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

    @property
    def metrics(self) -> dict[str, Any]:
        return dict((self.manifest or {}).get("metrics") or {})

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name, "kind": self.kind, "method": self.method, "status": self.status,
            "reason": self.reason, "duration_s": round(self.duration_s, 3), "output": self.output,
            "metrics": self.metrics,
        }
        for key in ("validation", "benchmark"):
            if self.manifest and key in self.manifest:
                d[key] = self.manifest[key]
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

    @property
    def passed(self) -> bool:
        return self.error is None and all(s.status in ("ran", "cached") for s in self.steps) and all(g.passed for g in self.gates)

    @property
    def exit_code(self) -> int:
        if self.dry_run:
            return EXIT_OK
        if self.error is not None:
            return self.error.exit_code
        return EXIT_OK if self.passed else EXIT_FAILED

    def to_dict(self) -> dict[str, Any]:
        d = {
            "recipe": self.recipe, "workdir": self.workdir, "dry_run": self.dry_run,
            "steps": [s.to_dict() for s in self.steps],
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed if not self.dry_run else None,
            "gptctl_version": __version__,
        }
        if self.error is not None:
            d["error"] = self.error.message
        return d


def default_workdir(recipe: Recipe) -> Path:
    return Path("runs") / recipe.name


def run_recipe(recipe: Recipe, workdir: str | Path | None = None, *, force: bool = False, dry_run: bool = False,
               kinds: Mapping[str, StepKind] | None = None, progress: Progress = NULL_PROGRESS,
               on_event: Callable[[str, StepReport], None] | None = None) -> RunReport:
    """Run (or, with `dry_run`, plan) a validated recipe and evaluate its gates.

    Each step writes to WORKDIR/NAME/. A step whose input contents, options and gptctl version
    match its last finished run is reused ("cached"); `force` reruns everything. A step that
    fails stops the run: later steps are "not-run" and gates are not evaluated.
    """
    kinds = KINDS if kinds is None else kinds
    workdir = Path(workdir) if workdir is not None else default_workdir(recipe)
    emit = on_event or (lambda event, step: None)
    report = RunReport(recipe.name, str(workdir), [], [], dry_run=dry_run)
    done: dict[str, dict[str, Any]] = {}  # name -> {"manifest", "output", "model", "identity"}
    if not dry_run:
        workdir.mkdir(parents=True, exist_ok=True)
    overall = progress.task(f"recipe {recipe.name}", total=len(recipe.steps))
    for step in recipe.steps:
        kind = kinds[step.kind]
        out = workdir / step.name
        rep = StepReport(step.name, step.kind, step.method, output=str(out), model=str(model_path(kind, out)))
        report.steps.append(rep)
        if report.error is not None:
            continue
        overall.update(0, step=f"{step.name} ({step.kind}{' ' + step.method if step.method else ''})")
        try:
            _plan_or_run(step, kind, rep, workdir, done, force, dry_run, progress, emit)
        except GptctlError as exc:
            rep.status, rep.error = "failed", exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            report.error = exc
            emit("failed", rep)
        except Exception as exc:  # a bug or a library failure: report it as this step's failure
            rep.status, rep.error = "failed", f"{type(exc).__name__}: {exc}"
            report.error = GptctlError(f"step {step.name} failed: {rep.error}")
            report.error.exit_code = EXIT_FAILED
            emit("failed", rep)
        overall.update(1)
    overall.close()
    report.gates = _gates(recipe, done, report, dry_run)
    return report


def _plan_or_run(step: Step, kind: StepKind, rep: StepReport, workdir: Path, done: dict, force: bool,
                 dry_run: bool, progress: Progress, emit: Callable) -> None:
    out = Path(rep.output)
    pending: list[str] = []  # earlier steps whose results are not known (dry run)
    resolved = _resolve(step, done, pending)
    rep.options = resolved
    if pending:
        rep.status, rep.reason = "would-run", f"after {', '.join(sorted(set(pending)))} (its inputs are not made yet)"
        emit("plan", rep)
        return

    record = _record(step, kind, resolved, done)
    prev = cache.read_state(workdir, step.name)
    reason = "--force" if force else cache.why_rerun(prev, record, out, cache.was_interrupted(workdir, step.name))
    if reason is None:
        manifest = read_manifest(out)
        if manifest is None:
            reason = f"no gptctl.json in {out}"
    if reason is None:
        rep.status, rep.reason = "cached", f"inputs, options and gptctl version unchanged since {prev.get('finished', '?')}"
        _finish(done, rep, manifest, prev["fingerprint"], prev["output_sha256"])
        emit("cached", rep)
        return
    rep.reason = reason
    if dry_run:
        rep.status = "would-run"
        emit("plan", rep)
        return

    options = _validated_options(step, kind, resolved, out)
    _clean_partials(workdir, step.name)
    cache.mark_running(workdir, step.name)
    emit("start", rep)
    start = time.perf_counter()
    try:
        manifest = kind.execute(StepRun(step.name, step.method, options, out, step.sources, _StepProgress(progress, step.name)))
    except Exception:
        cache.clear_running(workdir, step.name)  # failed, not interrupted: the next run says why it reruns
        raise
    finally:
        rep.duration_s = time.perf_counter() - start
    manifest = manifest or read_manifest(out)
    if manifest is None or not out.exists():
        raise GptctlError(f"step {step.name} finished without writing {out}/gptctl.json")
    output_sha = cache.content_hash(out)
    cache.write_state(workdir, step.name, {**record, "output_sha256": output_sha, "output_signature": cache.signature(out),
                                           "duration_s": rep.duration_s})
    cache.clear_running(workdir, step.name)
    rep.status = "ran"
    _finish(done, rep, manifest, record["fingerprint"], output_sha)
    emit("done", rep)


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
    done[rep.name] = {"manifest": manifest, "output": rep.output, "model": rep.model,
                      "identity": {"fingerprint": fingerprint, "output_sha256": output_sha}}


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
            raise BadInput(f"step {step.name}: {ref.text}: {exc.args[0]}",
                           f"see {done[name]['output']}/gptctl.json for what it records") from None

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
    rec = {"kind": step.kind, "method": step.method, "options": _resolve(step, done, [], keep_paths=True),
           "inputs": inputs, "sources": sources, "gptctl_version": __version__}
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


def _validated_options(step: Step, kind: StepKind, resolved: dict[str, Any], out: Path) -> Any:
    """Validate the resolved options with the kind's own pydantic model (values from earlier steps
    are only known now), with the runner's fields filled in."""
    data = dict(resolved)
    if "output" in kind.runner_fields:
        data["output"] = str(out)
    if "overwrite" in kind.runner_fields:
        data["overwrite"] = True
    instance, problems = option_problems(kind.options_model(step.method), data, prefix=("steps", step.name, "options"))
    if problems:
        raise BadInput(f"step {step.name}: invalid options once earlier results were filled in",
                       "check the values the references point to", details=[f"{format_path(p)}: {m}" for p, m in problems])
    return instance


def _clean_partials(workdir: Path, name: str) -> None:
    """Remove hidden work folders a killed step left beside its output (see gptctl.outputs)."""
    for leftover in list(workdir.glob(f".{name}.partial-*")) + list(workdir.glob(f".{name}.old-*")):
        shutil.rmtree(leftover, ignore_errors=True)


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
            raise KeyError(f"{'.'.join([prefix, *parts[:i + 1]])}: not in {where} (it has: {have})")
    return node


def _gates(recipe: Recipe, done: dict, report: RunReport, dry_run: bool) -> list[GateResult]:
    if dry_run or report.error is not None:
        why = "dry run: not evaluated" if dry_run else "not evaluated: a step failed"
        return [GateResult(expr=g, passed=False, error=why) for g in recipe.gates]
    lookup = lookup_in(recipe, done)
    return [evaluate(g, lookup) for g in recipe.gates]
