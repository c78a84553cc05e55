"""`export_model`: resolve, load, export, validate, optionally optimize/quantize/benchmark, write atomically."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from gptctl.errors import BadInput
from gptctl.export.options import ExportOptions
from gptctl.manifest import MANIFEST_NAME, Manifest, dir_size, sha256_file, sha256_path
from gptctl.options import parse_options
from gptctl.outputs import atomic_output_dir, check_output_dir
from gptctl.progress import NULL_PROGRESS, Progress
from gptctl.runtime.artifact import file_bytes, is_onnx_file, onnx_files


BenchmarkFn = Callable[..., dict[str, Any]]


def export_model(options: ExportOptions | dict[str, Any], progress: Progress | None = None, *,
                 benchmark: BenchmarkFn | None = None) -> dict[str, Any]:
    """Export a model to a validated ONNX artifact in `options.output`; return the manifest written there.

    `benchmark` measures the finished graph when `options.benchmark` is set: `gptctl.bench.run_benchmark`
    (passed in by the CLI and the recipe runner, so that export and bench never import each other).

    Raises:
        BadInput: an unusable option, input or output path (exit 2), before anything heavy is loaded.
        CheckFailed: validation over `atol`, greedy tokens that differ, a LoRA merge that changes the
            logits, or a required execution provider that is not active (exit 1). Nothing is written then.
    """
    opts = options if isinstance(options, ExportOptions) else parse_options(ExportOptions, dict(options), what="export options")
    progress = progress or NULL_PROGRESS
    started = time.perf_counter()

    # Everything that can be checked without loading a model is checked first.
    target = check_output_dir(opts.output, overwrite=opts.overwrite)
    from gptctl.model_source import resolve_model

    source = resolve_model(opts.model, trust_remote_code=opts.trust_remote_code)
    if source.path is not None and target.resolve() in (source.path.resolve(), *source.path.resolve().parents):
        raise BadInput(f"--output {target} would replace the input model", "choose another --output directory")
    if source.kind == "prompt-adapter" and opts.task != "text-generation-with-past":
        raise BadInput("a prompt-tuning adapter is exported with its soft prompt as a prefix KV cache",
                       "use --task text-generation-with-past (the default)")
    if opts.task == "feature-extraction" and source.is_adapter:
        raise BadInput("feature-extraction exports take a full model, not an adapter", "pass the base model directory")
    eval_records = None
    if opts.eval_data:
        from gptctl.export.quantize import load_eval_records

        if opts.task == "feature-extraction":
            raise BadInput("--eval-data (perplexity) needs a text-generation task")
        eval_records = load_eval_records(opts.eval_data)
    if opts.benchmark and benchmark is None:
        raise BadInput("benchmark: true needs a benchmark function",
                       "call gptctl.export.export_model(..., benchmark=gptctl.bench.run_benchmark)")
    probes = None
    if opts.require_provider:
        from gptctl.runtime.providers import check_required, resolve_providers

        _, probes = resolve_providers(list(opts.require_provider), [])
        check_required(probes, list(opts.require_provider))

    with atomic_output_dir(target) as work:
        result = _export_into(work, opts, source, eval_records, progress)
        metrics = result["metrics"]
        metrics["export_wall_s"] = round(time.perf_counter() - started, 3)
        extra: dict[str, Any] = {"validation": result["validation"]}
        if result.get("quantization"):
            extra["quantization"] = result["quantization"]
        if result.get("optimization"):
            extra["optimization"] = result["optimization"]
        extra["shape_sharing"] = result["shape_sharing"]
        if opts.benchmark:
            spec = str(source.content_path()) if source.path is not None else opts.model
            extra["benchmark"] = benchmark(work, opts, source_spec=spec, vocab_size=result["vocab_size"],
                                               progress=progress)
        elif probes:
            extra["benchmark"] = {k: {x: v.get(x) for x in ("provider", "ort_provider", "available", "reason", "active_providers")}
                                  for k, v in probes.items()}
        outputs = {}
        for f in onnx_files(work):
            outputs[f.name] = {"path": f.name, "sha256": sha256_file(f), "bytes": f.stat().st_size}
        inputs = {"model": {"spec": opts.model, "kind": source.kind, "sha256": sha256_path(source.content_path()),
                            "path": str(source.content_path())}}
        if source.base is not None:
            inputs["base_model"] = {"spec": source.base.spec, "kind": source.base.kind,
                                    "sha256": sha256_path(source.base.content_path()), "path": str(source.base.content_path())}
        manifest = Manifest(step="export", method="onnx", options=opts.model_dump(mode="json"), inputs=inputs,
                            outputs=outputs, metrics=metrics, parent=source.manifest, extra=extra)
        manifest.write(work)
        return manifest.to_dict()


def _load(source: Any, opts: ExportOptions, progress: Progress) -> dict[str, Any]:
    """Load what gets exported and what it is validated against."""
    from gptctl.export.validate import TorchReference, check_lora_merge, fixed_inputs, raise_if_failed
    from gptctl.model_source import load_causal_lm, load_tokenizer

    progress.info(f"loading {source.display} ({source.kind})")
    tokenizer = load_tokenizer(source)
    out: dict[str, Any] = {"tokenizer": tokenizer, "prefix": None, "merge": None}
    if opts.task == "feature-extraction":
        from transformers import AutoModel

        base = source.base if source.is_adapter else source
        kwargs = {"gguf_file": base.gguf_file} if base.kind == "gguf" else {}
        model = AutoModel.from_pretrained(base.path, trust_remote_code=opts.trust_remote_code, **kwargs).eval()
        out.update(model=model, reference=TorchReference(model))
        return out
    model = load_causal_lm(source)
    if source.kind == "lora-adapter":
        vocab = model.get_base_model().config.vocab_size
        merged, merge = check_lora_merge(model, fixed_inputs(tokenizer, vocab), opts.atol)
        if not merge["passed"]:
            raise_if_failed({**merge, "outputs": {"logits (adapter vs merged)": {"max": merge["max_abs_diff"]}}},
                            "the merged LoRA adapter")
        out.update(model=merged, reference=TorchReference(merged), merge=merge)
    elif source.kind == "prompt-adapter":
        from gptctl.export.onnx_export import prompt_prefix_cache

        out["prefix"] = prompt_prefix_cache(model)
        num_virtual = int(out["prefix"][0][0].shape[2])
        out.update(model=model.get_base_model(), reference=TorchReference(model, num_virtual=num_virtual))
    else:
        out.update(model=model, reference=TorchReference(model))
    return out


def _export_into(work: Path, opts: ExportOptions, source: Any, eval_records: list | None, progress: Progress) -> dict[str, Any]:
    from gptctl.export import onnx_export as ox
    from gptctl.export.validate import raise_if_failed, validate_decoder, validate_encoder

    metrics: dict[str, Any] = {}
    t = time.perf_counter()
    loaded = _load(source, opts, progress)
    model, tokenizer = loaded["model"], loaded["tokenizer"]
    config = model.config
    vocab = int(getattr(config, "vocab_size", None) or config.get_text_config().vocab_size)
    metrics["load_s"] = round(time.perf_counter() - t, 3)

    progress.info(f"exporting with optimum ({opts.task})")
    t = time.perf_counter()
    raw_dir = work / ".optimum"
    raw = ox.export_with_optimum(model, raw_dir, task=opts.task, opset=opts.opset)
    proto = ox.load_onnx(raw)
    quantizing = opts.quantize != "none"
    # Quantization wants the LM head as its own MatMul weight (untied); fp32/fp16 keep one copy on disk.
    tied = [] if quantizing else ox.tie_lm_head(proto)
    metrics["lm_head"] = "untied for quantization" if quantizing else ("tied to the embedding" if tied else "own weight")
    if loaded["prefix"] is not None:
        metrics["prompt_virtual_tokens"] = ox.fold_prompt_prefix(proto, loaded["prefix"])
    shutil.rmtree(raw_dir, ignore_errors=True)
    metrics["onnx_export_s"] = round(time.perf_counter() - t, 3)

    result: dict[str, Any] = {"metrics": metrics, "vocab_size": vocab}
    if opts.optimize:
        from gptctl.export.optimize_graph import optimize_transformer

        progress.info("applying ONNX Runtime transformer fusions")
        t = time.perf_counter()
        proto, result["optimization"] = optimize_transformer(proto, config)
        metrics["optimize_s"] = round(time.perf_counter() - t, 3)

    # Every layer repeats the same shape arithmetic; let ONNX Runtime merge it (gptctl.export.shapes).
    from gptctl.export.shapes import share_shape_computations

    t = time.perf_counter()
    result["shape_sharing"] = share_shape_computations(proto)
    metrics["shape_sharing_s"] = round(time.perf_counter() - t, 3)

    staged = quantizing or opts.dtype == "fp16"
    fp32_path = (work / ".fp32" / ox.MODEL_FILE) if staged else (work / ox.MODEL_FILE)
    t = time.perf_counter()
    ox.save_onnx(proto, fp32_path)
    metrics["save_s"] = round(time.perf_counter() - t, 3)

    progress.info("validating ONNX Runtime against PyTorch")
    t = time.perf_counter()
    threads = opts.threads
    fp32_lm = None  # one session on the fp32 graph, shared by validation, perplexity and comparisons
    if opts.task == "feature-extraction":
        validation = validate_encoder(fp32_path, loaded["reference"], tokenizer, atol=opts.atol, vocab_size=vocab, threads=threads)
    else:
        from gptctl.runtime.session import OrtCausalLM

        fp32_lm, _ = OrtCausalLM.from_path(fp32_path, "cpu", threads=threads)
        validation = validate_decoder(fp32_path, loaded["reference"], tokenizer, atol=opts.atol,
                                      greedy_tokens=opts.greedy_tokens, vocab_size=vocab, threads=threads, lm=fp32_lm)
    if loaded["merge"] is not None:
        validation["lora_merge"] = loaded["merge"]
    validation["checked_graph"] = "model.onnx" if not staged else f"fp32 graph before {opts.quantize if quantizing else 'fp16'} conversion"
    metrics["validation_s"] = round(time.perf_counter() - t, 3)
    raise_if_failed(validation)
    result["validation"] = validation

    eval_data = None
    if eval_records is not None:
        from gptctl.export.quantize import eval_samples, perplexity_onnx

        eval_data = eval_samples(tokenizer, eval_records, vocab_size=vocab, path=opts.eval_data)
        progress.info(f"perplexity of the fp32 graph on {len(eval_data)} sequences")
        ppl = perplexity_onnx(fp32_lm, eval_data)
        metrics["ppl_fp32"] = ppl["ppl"]
        metrics["eval_tokens"] = ppl["tokens"]

    final_lm = None
    if quantizing:
        from gptctl.runtime.session import OrtCausalLM
        from gptctl.export.quantize import perplexity_onnx, quantize_weights

        progress.info(f"quantizing weights to {opts.quantize} (MatMulNBits, block {opts.block_size})")
        t = time.perf_counter()
        qproto, report = quantize_weights(proto, bits=4 if opts.quantize == "int4" else 8, block_size=opts.block_size,
                                         head_bits=opts.head_bits)
        del proto
        ox.save_onnx(qproto, work / ox.MODEL_FILE)
        del qproto
        metrics["quantize_s"] = round(time.perf_counter() - t, 3)
        final_lm, _ = OrtCausalLM.from_path(work / ox.MODEL_FILE, "cpu", threads=threads)
        if eval_data is not None:
            progress.info(f"perplexity of the {opts.quantize} graph")
            ppl = perplexity_onnx(final_lm, eval_data)
            metrics["ppl_quantized"] = ppl["ppl"]
            metrics["ppl_ratio"] = round(ppl["ppl"] / metrics["ppl_fp32"], 4)
            report["ppl_fp32"], report["ppl_quantized"] = metrics["ppl_fp32"], ppl["ppl"]
        result["quantization"] = report
    elif opts.dtype == "fp16":
        progress.info("converting to fp16")
        ox.save_onnx(ox.convert_fp16(proto), work / ox.MODEL_FILE)
        del proto
    if staged and fp32_lm is not None:
        from gptctl.runtime.session import OrtCausalLM
        from gptctl.export.validate import compare_converted

        if final_lm is None:
            final_lm, _ = OrtCausalLM.from_path(work / ox.MODEL_FILE, "cpu", threads=threads)
        validation["converted_vs_fp32"] = compare_converted(fp32_lm, final_lm, tokenizer, vocab_size=vocab,
                                                            greedy_tokens=opts.greedy_tokens)
    del fp32_lm, final_lm
    if staged:
        shutil.rmtree(work / ".fp32", ignore_errors=True)

    progress.info("writing tokenizer and configs")
    tokenizer.save_pretrained(work)
    config.save_pretrained(work)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        try:
            generation_config.save_pretrained(work)
        except Exception:  # an invalid generation config is not worth failing an export for
            pass
    metrics["size_bytes"] = file_bytes(onnx_files(work))
    metrics["artifact_bytes"] = dir_size(work) - ((work / MANIFEST_NAME).stat().st_size if (work / MANIFEST_NAME).exists() else 0)
    return result
