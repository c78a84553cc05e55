"""`export_model`: check the inputs, run the export passes (gptctl.export.passes), write atomically.

Everything that can be checked without loading a model is checked first; then `PASSES` run in order
on one `ExportState` (load, export, graph transforms, save, validate, perplexity, quantize/convert,
compare); the manifest records each pass (ran or skipped, why, seconds) next to today's metrics.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput
from gptctl.export.model_card import write_model_card
from gptctl.export.options import ExportOptions
from gptctl.export.passes import PASSES, ExportState, run_passes
from gptctl.export.passes.base import FP32_DIR
from gptctl.manifest import MANIFEST_NAME, Manifest, dir_size, sha256_file, sha256_path
from gptctl.options import parse_options
from gptctl.outputs import atomic_output_dir, check_output_dir
from gptctl.progress import NULL_PROGRESS, Progress
from gptctl.runtime.artifact import file_bytes, onnx_files

BenchmarkFn = Callable[..., dict[str, Any]]


def export_model(
    options: ExportOptions | dict[str, Any], progress: Progress | None = None, *, benchmark: BenchmarkFn | None = None
) -> dict[str, Any]:
    """Export a model to a validated ONNX artifact in `options.output`; return the manifest written there.

    `benchmark` measures the finished graph when `options.benchmark` is set: `gptctl.bench.run_benchmark`
    (passed in by the CLI and the recipe runner, so that export and bench never import each other).

    Raises:
        BadInput: an unusable option, input or output path (exit 2), before anything heavy is loaded.
        CheckFailed: validation over `atol`, greedy tokens that differ, a LoRA merge that changes the
            logits, or a required execution provider that is not active (exit 1). Nothing is written then.
    """
    opts = (
        options
        if isinstance(options, ExportOptions)
        else parse_options(ExportOptions, dict(options), what="export options")
    )
    progress = progress or NULL_PROGRESS
    started = time.perf_counter()
    target, source, eval_records, probes = _check_before_loading(opts, benchmark)

    with atomic_output_dir(target) as work:
        state = ExportState(work=work, source=source, progress=progress, eval_records=eval_records)
        records = run_passes(PASSES, state, opts)
        _finish(state, opts)
        metrics = state.metrics
        metrics["export_wall_s"] = round(time.perf_counter() - started, 3)
        extra: dict[str, Any] = {"validation": state.validation}
        for section in ("quantization", "optimization"):
            if state.sections.get(section):
                extra[section] = state.sections[section]
        extra["shape_sharing"] = state.sections["shape_sharing"]
        if opts.benchmark:
            spec = str(source.content_path()) if source.path is not None else opts.model
            extra["benchmark"] = benchmark(work, opts, source_spec=spec, vocab_size=state.vocab_size, progress=progress)
        elif probes:
            keys = ("provider", "ort_provider", "available", "reason", "active_providers")
            extra["benchmark"] = {k: {x: v.get(x) for x in keys} for k, v in probes.items()}
        extra["passes"] = [r.to_dict() for r in records]
        manifest = Manifest(
            step="export",
            method="onnx",
            options=opts.model_dump(mode="json"),
            inputs=_inputs(opts, source),
            outputs=_outputs(work),
            metrics=metrics,
            parent=source.manifest,
            extra=extra,
        )
        manifest.write(work)
        result = manifest.to_dict()
        write_model_card(work, result)
        return result


def _check_before_loading(opts: ExportOptions, benchmark: BenchmarkFn | None) -> tuple[Path, Any, list | None, Any]:
    """Everything that can be checked without loading a model: (output dir, source, eval records, provider probes)."""
    target = check_output_dir(opts.output, overwrite=opts.overwrite)
    from gptctl.model_source import resolve_model

    source = resolve_model(opts.model, trust_remote_code=opts.trust_remote_code)
    if source.path is not None and target.resolve() in (source.path.resolve(), *source.path.resolve().parents):
        raise BadInput(f"--output {target} would replace the input model", "choose another --output directory")
    if source.kind == "prompt-adapter" and opts.task != "text-generation-with-past":
        raise BadInput(
            "a prompt-tuning adapter is exported with its soft prompt as a prefix KV cache",
            "use --task text-generation-with-past (the default)",
        )
    if opts.task == "feature-extraction" and source.is_adapter:
        raise BadInput("feature-extraction exports take a full model, not an adapter", "pass the base model directory")
    eval_records = None
    if opts.eval_data:
        from gptctl.evaluation import load_eval_records

        if opts.task == "feature-extraction":
            raise BadInput("--eval-data (perplexity) needs a text-generation task")
        eval_records = load_eval_records(opts.eval_data)
    if opts.benchmark and benchmark is None:
        raise BadInput(
            "benchmark: true needs a benchmark function",
            "call gptctl.export.export_model(..., benchmark=gptctl.bench.run_benchmark)",
        )
    probes = None
    if opts.require_provider:
        from gptctl.runtime.providers import check_required, resolve_providers

        _, probes = resolve_providers(list(opts.require_provider), [])
        check_required(probes, list(opts.require_provider))
    if source.kind == "hf-dir":  # an encoder under the default text-generation task: say which --task fits
        from gptctl.export.onnx_export import check_directory_task

        check_directory_task(source.path, opts.task)
    return target, source, eval_records, probes


def _finish(state: ExportState, opts: ExportOptions) -> None:
    """Drop the staged fp32 graph, write tokenizer and configs, measure the artifact."""
    work = state.work
    state.fp32_lm = state.final_lm = None  # close the sessions before their files go
    if state.staged(opts):
        shutil.rmtree(work / FP32_DIR, ignore_errors=True)
    state.progress.info("writing tokenizer and configs")
    state.tokenizer.save_pretrained(work)
    state.config.save_pretrained(work)
    generation_config = getattr(state.model, "generation_config", None)
    if generation_config is not None:
        try:
            generation_config.save_pretrained(work)
        except Exception:  # an invalid generation config is not worth failing an export for
            pass
    metrics = state.metrics
    metrics["size_bytes"] = file_bytes(onnx_files(work))
    manifest = work / MANIFEST_NAME
    metrics["artifact_bytes"] = dir_size(work) - (manifest.stat().st_size if manifest.exists() else 0)


def _inputs(opts: ExportOptions, source: Any) -> dict[str, Any]:
    inputs = {
        "model": {
            "spec": opts.model,
            "kind": source.kind,
            "sha256": sha256_path(source.content_path()),
            "path": str(source.content_path()),
        }
    }
    if source.base is not None:
        base = source.base
        inputs["base_model"] = {
            "spec": base.spec,
            "kind": base.kind,
            "sha256": sha256_path(base.content_path()),
            "path": str(base.content_path()),
        }
    return inputs


def _outputs(work: Path) -> dict[str, Any]:
    return {f.name: {"path": f.name, "sha256": sha256_file(f), "bytes": f.stat().st_size} for f in onnx_files(work)}
