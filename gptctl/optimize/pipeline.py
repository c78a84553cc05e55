"""The one flow every optimize method runs through.

check options, model reference, output directory and data (before anything heavy) -> load ->
perplexity before -> the method's `apply` -> perplexity after -> the method's `save` + tokenizer
+ manifest into a working directory that is renamed onto `--output` only when complete.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput
from gptctl.manifest import MANIFEST_NAME, Manifest, dir_size, read_manifest, sha256_file, sha256_path
from gptctl.model_source import ModelSource, resolve_model
from gptctl.optimize.registry import method_module, options_class
from gptctl.options import parse_options
from gptctl.outputs import atomic_output_dir, check_output_dir, resumable_work_dir
from gptctl.progress import NULL_PROGRESS, Progress

# Options that do not change what training computes: a checkpoint made with other values resumes.
_NOT_IN_FINGERPRINT = {"output", "overwrite", "resume", "checkpoint_every", "merge", "eval_data", "trust_remote_code"}


@dataclass
class Job:
    """What a method's `apply`/`save` work on."""

    method: str
    options: Any
    source: ModelSource
    model: Any
    tokenizer: Any
    train_data: Any  # data.Dataset or None
    accelerator: Any
    work_dir: Path
    progress: Progress
    pad_id: int
    base_spec: str
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def set_adapter_base(self, directory: Path) -> None:
        """Point adapter_config.json at the input model in a form plain peft loads (a Hub id or an HF
        directory; see optimize/card.py); gptctl's own spec (pkg:, ...) stays in gptctl.json."""
        from gptctl.optimize.card import peft_base_reference

        path = Path(directory) / "adapter_config.json"
        cfg = json.loads(path.read_text())
        cfg["base_model_name_or_path"] = peft_base_reference(self.source)
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def run_method(method: str, options: Any, progress: Progress | None = None) -> dict[str, Any]:
    t_start = time.perf_counter()
    progress = progress or NULL_PROGRESS
    impl = method_module(method)
    cls = options_class(method)
    opts = options if isinstance(options, cls) else parse_options(cls, dict(options), what=f"{method} options")

    # Everything that can be checked without loading a model, first.
    source = resolve_model(opts.model, trust_remote_code=opts.trust_remote_code)
    _check_source(source, method)
    resume = bool(getattr(opts, "resume", False))
    target = check_output_dir(opts.output, overwrite=opts.overwrite, resume=resume)
    train_records, eval_records = _read_data(opts)

    accelerator = _accelerator(opts.precision)
    main = accelerator.is_main_process
    work = _work_dir(target, stable=impl.TRAINS, resume=resume, main=main)
    accelerator.wait_for_everyone()
    try:
        return _run(
            method,
            impl,
            opts,
            source,
            target,
            work,
            train_records,
            eval_records,
            accelerator,
            progress if main else NULL_PROGRESS,
            t_start,
        )
    except BaseException:
        # Keep a working directory only when it holds a checkpoint to resume from.
        if main and work is not None and work.exists() and not (work / "checkpoints").exists():
            shutil.rmtree(work, ignore_errors=True)
        raise


def _run(method, impl, opts, source, target, work, train_records, eval_records, accelerator, progress, t_start):
    import torch

    loaded = _load(impl, opts, source, train_records, eval_records, accelerator, progress)

    def measure(m, label):
        return _perplexity(m, loaded, opts, accelerator, progress, label)

    before = measure(loaded.model, "perplexity before")
    fingerprint = {k: v for k, v in opts.model_dump(mode="json").items() if k not in _NOT_IN_FINGERPRINT}
    inputs = loaded.inputs
    fingerprint.update(model_sha256=inputs["model"]["sha256"], data_sha256=inputs.get("data", {}).get("sha256"))
    job = Job(
        method,
        opts,
        source,
        loaded.model,
        loaded.tokenizer,
        loaded.train_data,
        accelerator,
        work,
        progress,
        loaded.pad_id,
        inputs["model"]["spec"],
        fingerprint,
    )
    torch.manual_seed(opts.seed)  # adapter initialisation: the same on every process and every resume
    method_metrics = impl.apply(job)
    after = measure(job.model, "perplexity after")
    trainable = sum(p.numel() for p in job.model.parameters() if p.requires_grad) if impl.TRAINS else 0
    metrics = _headline(before, after, trainable, loaded.total_params, method_metrics)
    metrics["load_s"] = round(loaded.load_s, 3)

    accelerator.wait_for_everyone()
    manifest = {"step": "optimize", "method": method, "metrics": metrics}  # what other processes return
    if accelerator.is_main_process:
        manifest = _save(job, impl, inputs, metrics, target, t_start)
    else:
        metrics["wall_s"] = round(time.perf_counter() - t_start, 3)
    accelerator.wait_for_everyone()
    return manifest


@dataclass
class _Loaded:
    """The tokenizer, model and tokenized data a run works on, and what loading them measured."""

    tokenizer: Any
    pad_id: int
    model: Any
    train_data: Any
    eval_data: Any
    inputs: dict[str, Any]
    load_s: float
    total_params: int


def _load(impl, opts, source, train_records, eval_records, accelerator, progress) -> _Loaded:
    import torch

    from gptctl.model_source import load_causal_lm, load_tokenizer

    progress.info(f"loading tokenizer of {source.display}")
    tokenizer = load_tokenizer(source)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # padding is masked anyway
    train_data, eval_data = _tokenize(opts, tokenizer, train_records, eval_records, progress)
    model_input = _model_input(source, opts.model)

    progress.info(f"loading model {source.display}")
    t_load = time.perf_counter()
    dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    if not impl.TRAINS and accelerator.device.type != "cpu":
        dtype = stored_dtype(source) or dtype  # on a GPU, prune in the stored precision (CPU: fp32)
    model = load_causal_lm(source, dtype=dtype, merge_adapter=True).to(accelerator.device)
    load_s = time.perf_counter() - t_load
    if impl.TRAINS:
        model.config.use_cache = False
    total_params = sum(p.numel() for p in model.parameters())
    limit = _context_limit(model.config, opts)
    if limit is not None and opts.max_length > limit:
        progress.info(f"--max-length {opts.max_length} is more than this model's {limit} positions; using {limit}")
        train_data, eval_data = _tokenize(opts, tokenizer, train_records, eval_records, progress, max_length=limit)
    inputs = _inputs(opts, model_input, train_data, eval_data)
    return _Loaded(tokenizer, pad_id, model, train_data, eval_data, inputs, load_s, total_params)


def _perplexity(model, loaded: _Loaded, opts, accelerator, progress, label: str):
    """Held-out perplexity of `model` (None without evaluation data)."""
    from gptctl.optimize.evaluate import perplexity

    if loaded.eval_data is None:
        return None
    return perplexity(
        model,
        loaded.eval_data,
        batch_size=opts.batch_size,
        pad_id=loaded.pad_id,
        autocast=accelerator.autocast,
        dist=accelerator,
        progress=progress,
        label=label,
    )


def _save(job: Job, impl, inputs, metrics, target: Path, t_start: float) -> dict[str, Any]:
    """Write the method's output, tokenizer, card and manifest, renamed onto `target` only when complete."""
    opts, progress = job.options, job.progress
    with atomic_output_dir(target, work_dir=job.work_dir) as out:
        progress.info(f"saving to {target}")
        outputs = impl.save(job, out)
        job.tokenizer.save_pretrained(out)
        if impl.ARTIFACT.endswith("-adapter"):
            _write_card(job, opts, inputs, metrics, out, target)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # only now: a failed save can still resume
        metrics["wall_s"] = round(time.perf_counter() - t_start, 3)
        return _write_manifest(job.method, opts, inputs, outputs, metrics, job.source, out)


def _write_card(job: Job, opts, inputs, metrics, out: Path, target: Path) -> None:
    """The adapter's README.md (over peft's empty template), from what the manifest will record."""
    from gptctl.optimize.card import write_adapter_card

    cfg = json.loads((out / "adapter_config.json").read_text())
    record = {"options": opts.model_dump(mode="json"), "inputs": inputs, "metrics": metrics}
    write_adapter_card(
        out,
        method=job.method,
        record=record,
        source=job.source,
        base_reference=cfg["base_model_name_or_path"],
        final_path=target.resolve(),
    )


def _tokenize(opts, tokenizer, train_records, eval_records, progress, max_length: int | None = None):
    from gptctl.optimize.data import tokenize

    max_length = max_length or opts.max_length
    train_data = eval_data = None
    if train_records:
        train_data = tokenize(train_records, tokenizer, max_length=max_length, packing=opts.packing, path=opts.data)
        if train_data.skipped_too_long:
            progress.info(
                f"skipped {train_data.skipped_too_long} of {train_data.records} samples longer than "
                f"{max_length} tokens (pass --packing to keep them)"
            )
    if eval_records:
        where = opts.eval_data or f"{opts.data} (--eval-split {opts.eval_split})"
        eval_data = tokenize(eval_records, tokenizer, max_length=max_length, packing=False, path=where, for_eval=True)
    elif max_length == opts.max_length:
        progress.info("no evaluation data: perplexity is not measured (pass --eval-data or --eval-split)")
    return train_data, eval_data


def _context_limit(config, opts) -> int | None:
    """The longest sequence the model takes (its position table), less the virtual tokens prepended."""
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not positions:
        return None
    return int(positions) - int(getattr(opts, "num_virtual_tokens", 0) or 0)


def _headline(before, after, trainable: int, total: int, method_metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics every method reports, first; then the method's own."""
    head: dict[str, Any] = {"ppl_before": None, "ppl_after": None, "ppl_change_pct": None, "eval_tokens": None}
    if before and after:
        head = {
            "ppl_before": round(before["ppl"], 4),
            "ppl_after": round(after["ppl"], 4),
            "ppl_change_pct": round(100 * (after["ppl"] - before["ppl"]) / before["ppl"], 2),
            "eval_tokens": before["tokens"],
        }
    head.update(trainable_params=trainable, total_params=total, trainable_pct=round(100 * trainable / total, 4))
    rest = dict(method_metrics)
    for key in ("loss_first", "loss_last", "train_tokens_per_s"):
        head[key] = rest.pop(key, None)
    return {**head, **rest}


def _check_source(source: ModelSource, method: str) -> None:
    if source.kind == "prompt-adapter":
        raise BadInput(
            f"{source.display} is a prompt-tuning adapter; it cannot be optimized further",
            "pass its base model instead",
        )
    if source.kind == "lora-adapter" and method != "prune":
        raise BadInput(
            f"{source.display} is a LoRA adapter; {method} trains on a full model",
            "run the LoRA step with --merge and pass OUTPUT/merged, or pass the base model",
        )


def _read_data(opts) -> tuple[list, list]:
    from gptctl.optimize.data import read_records, split_records

    train = read_records(opts.data, "--data") if opts.data else []
    held = read_records(opts.eval_data, "--eval-data") if opts.eval_data else []
    if opts.eval_split is not None:
        train, held = split_records(train, opts.eval_split, opts.seed, opts.data)
    return train, held


def _accelerator(precision: str):
    import torch
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if precision == "auto":
        mp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    elif precision == "fp16":
        if not cuda:
            raise BadInput(
                "--precision fp16 needs a CUDA GPU, and none is available", "use --precision auto (fp32 on CPU)"
            )
        mp = "fp16"
    elif precision == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise BadInput("this GPU does not support bf16", "use --precision fp16 or auto")
        if not cuda and not _cpu_bf16():
            raise BadInput(
                "this CPU has no bf16 instructions (AVX512-BF16 or AMX)", "use --precision auto (fp32 on CPU)"
            )
        mp = "bf16"
    else:
        mp = "no"
    # Without a GPU, say so: only then does accelerate run several processes (torchrun, `accelerate
    # launch --multi_gpu`) as one data-parallel CPU job over gloo instead of N independent runs.
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return Accelerator(mixed_precision=mp, cpu=not (cuda or mps))


def _cpu_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _work_dir(target: Path, *, stable: bool, resume: bool, main: bool) -> Path | None:
    """Training keeps a stable working directory beside the target so a killed run can resume."""
    if not stable:
        return None
    work = resumable_work_dir(target)
    if main and work.exists() and not resume:
        shutil.rmtree(work)
    if main:
        work.mkdir(parents=True, exist_ok=True)
    return work


def stored_dtype(source: ModelSource):
    """The torch dtype a Hugging Face directory's weights are stored in (config.json), or None."""
    import torch

    base = source.base if source.is_adapter else source
    if base is None or base.kind != "hf-dir" or base.path is None:
        return None
    try:
        cfg = json.loads((base.path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    name = cfg.get("torch_dtype") or cfg.get("dtype")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(name))


def portable_spec(source: ModelSource, spec: str) -> str:
    """How the input model is named in the manifest: as given when it is pkg: or a Hub id, else an absolute path."""
    if source.selection and str((source.selection.get("model") or {}).get("source_path", "")).startswith("pkg:"):
        return source.selection["model"]["source_path"]
    if spec.startswith("pkg:") or (source.hub_id and not source.selection):
        return spec
    if source.hub_id:
        return source.hub_id
    return str(source.content_path().resolve())


def _model_input(source: ModelSource, spec: str) -> dict[str, Any]:
    """The manifest's `inputs.model`: how to find it again, what it is, and its content hash."""
    model: dict[str, Any] = {
        "spec": portable_spec(source, spec),
        "kind": source.kind,
        "sha256": sha256_path(source.content_path()),
    }
    if source.is_adapter and source.base is not None:
        model["base"] = {
            "spec": portable_spec(source.base, source.base.spec),
            "kind": source.base.kind,
            "sha256": sha256_path(source.base.content_path()),
        }
    return model


def _inputs(opts, model: dict[str, Any], train_data, eval_data) -> dict[str, Any]:
    inputs: dict[str, Any] = {"model": model}
    if opts.data:
        inputs["data"] = {"path": str(Path(opts.data).resolve()), "sha256": sha256_file(opts.data)}
        if train_data is not None:
            inputs["data"].update(train_data.summary())
    if eval_data is not None:
        where = opts.eval_data or opts.data
        inputs["eval_data"] = {
            "path": str(Path(where).resolve()),
            "sha256": sha256_file(where),
            "split": opts.eval_split,
            **eval_data.summary(),
        }
    return inputs


def _write_manifest(method, opts, inputs, outputs, metrics, source: ModelSource, out: Path) -> dict[str, Any]:
    parent = source.manifest
    if parent is None and source.selection is not None:
        # `select --output` writes its manifest beside the selection file.
        beside = read_manifest(Path(source.spec).parent) if Path(source.spec).is_file() else None
        parent = (
            beside
            if beside and beside.get("step") == "select"
            else (source.selection if source.selection.get("step") else None)
        )
    for entry in outputs.values():
        p = out / entry["path"]
        entry.update(sha256=sha256_path(p), bytes=dir_size(p))
    metrics["size_bytes"] = sum(f.stat().st_size for f in out.glob("*.safetensors"))  # the weights written
    man = Manifest(
        step="optimize",
        method=method,
        options=opts.model_dump(mode="json"),
        inputs=inputs,
        outputs=outputs,
        metrics=metrics,
        parent=parent,
    )
    if "merged" in outputs:
        # The merged model is a full model of its own: give it a manifest so later steps see its history.
        Manifest(
            step="optimize",
            method=method,
            options=man.options,
            inputs=inputs,
            outputs={"model": dict(outputs["merged"], path=".")},
            metrics=metrics,
            parent=parent,
            extra={"merged_from": ".."},
        ).write(out / "merged")
        outputs["adapter"].update(sha256=sha256_path(out), bytes=dir_size(out))
    man.write(out)
    return json.loads((out / MANIFEST_NAME).read_text())
