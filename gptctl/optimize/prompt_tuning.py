"""Prompt tuning: learn a few virtual token embeddings prepended to every input; the model is frozen."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gptctl.optimize.pipeline import Job

TRAINS = True
ARTIFACT = "prompt-adapter"


def apply(job: Job) -> dict[str, Any]:
    """Add `--num-virtual-tokens` trainable embeddings, initialised from `--init-text` or random vocabulary tokens."""
    import torch
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

    from gptctl.optimize.train import train

    opts = job.options
    embeddings = job.model.get_input_embeddings()
    config = PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=opts.num_virtual_tokens, prompt_tuning_init=PromptTuningInit.RANDOM
    )
    job.model = get_peft_model(job.model, config)
    # Start from real token embeddings: peft's RANDOM is N(0, 1), far from the scale the model expects.
    # The initial weights are saved with the adapter, so the config keeps RANDOM (no tokenizer at load).
    if opts.init_text:
        ids = job.tokenizer(opts.init_text, add_special_tokens=False)["input_ids"]
        source = "init_text"
    else:
        ids = torch.randint(
            0, embeddings.num_embeddings, (opts.num_virtual_tokens,), generator=torch.Generator().manual_seed(opts.seed)
        ).tolist()
        source = "random vocabulary tokens"
    ids = (ids * (opts.num_virtual_tokens // max(len(ids), 1) + 1))[: opts.num_virtual_tokens]
    prompt = job.model.prompt_encoder["default"].embedding
    with torch.no_grad():
        prompt.weight.copy_(
            embeddings.weight[torch.tensor(ids, device=embeddings.weight.device)].to(prompt.weight.dtype)
        )
    metrics = {"virtual_tokens_init": source}
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
    """Write the peft adapter (adapter_config.json + adapter_model.safetensors)."""
    job.model.save_pretrained(directory, safe_serialization=True, save_embedding_layers=False)
    job.set_adapter_base(directory)
    return {"adapter": {"path": ".", "kind": ARTIFACT}}
