"""LoRA: train low-rank adapters on the attention and MLP projections; the base weights stay frozen."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gptctl.optimize.pipeline import Job

TRAINS = True
ARTIFACT = "lora-adapter"


def apply(job: Job) -> dict[str, Any]:
    """Wrap the model with LoRA adapters and train them; return the method's metrics."""
    from peft import LoraConfig, get_peft_model

    from gptctl.optimize.targets import lora_targets, uses_conv1d
    from gptctl.optimize.train import train

    opts = job.options
    targets = lora_targets(job.model, opts.target_modules)
    config = LoraConfig(
        r=opts.rank,
        lora_alpha=opts.alpha,
        lora_dropout=opts.dropout,
        target_modules=targets,
        fan_in_fan_out=uses_conv1d(job.model),
        bias="none",
        task_type="CAUSAL_LM",
    )
    job.model = get_peft_model(job.model, config)
    metrics = {"target_modules": targets if isinstance(targets, str) else sorted(targets)}
    metrics.update(
        train(
            job.model,
            job.train_data,
            opts,
            accelerator=job.accelerator,
            work_dir=job.work_dir,
            progress=job.progress,
            pad_id=job.pad_id,
            fingerprint=job.fingerprint,
        )
    )
    return metrics


def save(job: Job, directory: Path) -> dict[str, Any]:
    """Write the adapter (and with --merge the merged model in `merged/`); return the outputs entries."""
    job.model.save_pretrained(directory, safe_serialization=True, save_embedding_layers=False)
    job.set_adapter_base(directory)
    outputs = {"adapter": {"path": ".", "kind": ARTIFACT}}
    if job.options.merge:
        merged = job.model.merge_and_unload()
        merged.save_pretrained(directory / "merged", safe_serialization=True)
        job.tokenizer.save_pretrained(directory / "merged")
        job.model = merged
        outputs["merged"] = {"path": "merged", "kind": "hf-model"}
    return outputs
