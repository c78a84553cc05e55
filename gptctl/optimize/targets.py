"""Which modules each method touches, per architecture.

LoRA adapts the attention and MLP projections by name (overridable with `--target-modules`);
pruning takes every Linear/Conv1D inside the decoder blocks, which by construction leaves the
embeddings and the LM head alone.
"""

from __future__ import annotations

from gptctl.errors import BadInput

_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# model_type -> LoRA target module names (attention + MLP projections).
LORA_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}


def _is_linear(module) -> bool:
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def lora_targets(model, requested: list[str] | None) -> list[str] | str:
    """The LoRA target module names for `model`: `requested` (checked), the architecture's, or 'all-linear'.

    Raises:
        BadInput: a requested name matches no Linear/Conv1D module (the known names are listed).
    """
    if requested == ["all-linear"]:
        return "all-linear"
    head = model.get_output_embeddings()
    names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_linear(m) and m is not head})
    if requested:
        unknown = [r for r in requested if r not in names]
        if unknown:
            raise BadInput(
                f"--target-modules {', '.join(unknown)}: no such Linear module in this {model.config.model_type} model",
                f"choose from: {', '.join(names)} (or all-linear)",
            )
        return list(requested)
    return LORA_TARGETS.get(model.config.model_type, "all-linear")


def uses_conv1d(model) -> bool:
    """GPT-2 style Conv1D weights are stored (in, out): LoRA needs fan_in_fan_out=True."""
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) for m in model.modules())


def block_linears(model) -> list[tuple[str, object]]:
    """(name, module) of every Linear/Conv1D inside the decoder blocks: the attention and MLP weights.

    The blocks are the `ModuleList` with one entry per hidden layer, so embeddings, the final norm
    and the LM head (often tied to the embeddings) are never among them.
    """
    from torch import nn

    layers = getattr(model.config, "num_hidden_layers", None)
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == layers]
    if not lists:
        raise BadInput(
            f"cannot find the decoder blocks of this {model.config.model_type} model",
            "pruning supports decoder-only models with one block per hidden layer",
        )
    prefix, blocks = max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))
    return [(f"{prefix}.{n}", m) for n, m in blocks.named_modules() if _is_linear(m)]
