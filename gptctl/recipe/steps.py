"""The kinds of recipe step: what options each takes (the same option classes as the CLI commands)
and how each runs. The registry holds small objects whose imports happen inside their functions,
so validating a recipe never loads torch, and tests can pass stand-in kinds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.progress import NULL_PROGRESS, Progress
from gptctl.recipe import serve_step


@dataclass
class StepRun:
    """What a kind's `execute` gets: the validated options and where to write."""

    name: str
    method: str | None
    options: Any  # the kind's options instance (model/output/overwrite filled in)
    output: Path
    sources: dict[str, str] = field(default_factory=dict)  # select only: catalog id -> local model spec
    progress: Progress = NULL_PROGRESS


@dataclass(frozen=True)
class StepKind:
    """One kind of step.

    `options_model(method)` returns the options class its options are validated with;
    `execute(run)` does the work, writes `gptctl.json` into `run.output` atomically and returns it.
    """

    name: str
    options_model: Callable[[str | None], type]
    execute: Callable[[StepRun], dict]
    methods: Callable[[], tuple[str, ...]] | None = None  # None: the kind takes no `method:`
    takes_model: bool = True  # options.model defaults to the previous step's model
    runner_fields: tuple[str, ...] = ("output", "overwrite")  # options the runner fills in
    model_file: str | None = None  # what ${steps.X.model} points to inside the output folder
    step_keys: tuple[str, ...] = ()  # extra keys allowed on the step (e.g. select's `sources`)
    # Files a step reads that its options do not name (select: the catalog it defaults to), so
    # the cache notices when they change: options dict -> {input name: path}.
    implicit_inputs: Callable[[dict], dict[str, str]] | None = None
    path_options: tuple[str, ...] = ()  # options naming files that must exist before the run starts
    # Where a killed or interrupted run of the step leaves its checkpoint (output folder -> file), for
    # kinds whose options take `resume`: the runner resumes from it when the inputs are the same.
    checkpoint: Callable[[Path], Path] | None = None


# ---------------------------------------------------------------- select


def _select_options(method: str | None) -> type:
    from gptctl.selection import SelectOptions

    return SelectOptions


SELECTION_FILE = "selection.json"


def _select_inputs(options: dict) -> dict[str, str]:
    from gptctl.catalog.loader import resolve_paths

    catalogs = options.get("catalog")
    catalogs = [catalogs] if isinstance(catalogs, str) else catalogs
    return {f"catalog[{i}]": str(path) for i, (_, path, _) in enumerate(resolve_paths(catalogs or None))}


def _select_execute(run: StepRun) -> dict:
    from gptctl.manifest import Manifest, sha256_file
    from gptctl.outputs import atomic_output_dir
    from gptctl.selection import select_models, write_selection

    result = select_models(run.options)
    with atomic_output_dir(run.output) as work:
        path = work / SELECTION_FILE
        write_selection(result, path)
        data = json.loads(path.read_text())
        chosen = data["model"]
        source = run.sources.get(chosen["id"])
        if source:
            chosen["source_path"] = _checked_source(source)
            path.write_text(json.dumps(data, indent=2) + "\n")
        manifest = Manifest(
            step="select",
            options=run.options.model_dump(mode="json"),
            outputs={"selection": {"path": str(run.output / SELECTION_FILE), "sha256": sha256_file(path)}},
            metrics={
                "model": chosen["id"],
                "params": chosen.get("params"),
                "candidates": len(data.get("models") or []),
                "source": chosen.get("source_path") or "hub",
            },
            extra={"selection": {"model": chosen, "constraints": data.get("constraints", {})}},
        )
        manifest.write(work)
    return manifest.to_dict()


def _checked_source(spec: str) -> str:
    """Fail at the select step (with the install hint) when the mapped weights are not there."""
    from gptctl.model_source import resolve_model

    resolve_model(spec)
    p = Path(spec).expanduser()
    return str(p.resolve()) if not spec.startswith("pkg:") and p.exists() else spec


# ---------------------------------------------------------------- optimize


def _optimize_options(method: str | None) -> type:
    from gptctl.optimize import options_model

    return options_model(method)


def _optimize_methods() -> tuple[str, ...]:
    from gptctl.optimize import METHODS

    return tuple(METHODS)


def _optimize_execute(run: StepRun) -> dict:
    from gptctl.optimize import optimize

    return optimize(run.method, run.options, progress=run.progress)


def _optimize_checkpoint(output: Path) -> Path:
    from gptctl.optimize.train import CHECKPOINT
    from gptctl.outputs import resumable_work_dir

    return resumable_work_dir(output) / CHECKPOINT


# ---------------------------------------------------------------- export


def _export_options(method: str | None) -> type:
    from gptctl.export import ExportOptions

    return ExportOptions


def _export_execute(run: StepRun) -> dict:
    from gptctl.bench import run_benchmark
    from gptctl.export import export_model

    return export_model(run.options, progress=run.progress, benchmark=run_benchmark)


KINDS: dict[str, StepKind] = {
    "select": StepKind(
        "select",
        _select_options,
        _select_execute,
        takes_model=False,
        runner_fields=(),
        model_file=SELECTION_FILE,
        step_keys=("sources",),
        implicit_inputs=_select_inputs,
        path_options=("catalog",),
    ),
    "optimize": StepKind(
        "optimize",
        _optimize_options,
        _optimize_execute,
        methods=_optimize_methods,
        path_options=("data", "eval_data"),
        checkpoint=_optimize_checkpoint,
    ),
    "export": StepKind("export", _export_options, _export_execute, path_options=("eval_data",)),
    "serve": StepKind("serve", serve_step.serve_options, serve_step.serve_execute),  # a canary of the service
}


def model_path(kind: StepKind, output: str | os.PathLike) -> Path:
    """Where ${steps.X.model} points for a step of `kind` writing to `output`."""
    return Path(output) / kind.model_file if kind.model_file else Path(output)
