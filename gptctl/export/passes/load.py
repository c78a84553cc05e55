"""Pass `load`: the model to export, its tokenizer, and the PyTorch reference it is validated against."""

from __future__ import annotations

from typing import Any

from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class LoadModel:
    name = "load"
    metric = "load_s"

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        return None

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.model_source import load_tokenizer

        source = state.source
        state.progress.info(f"loading {source.display} ({source.kind})")
        state.tokenizer = load_tokenizer(source)
        if opts.task == "feature-extraction":
            _load_encoder(state, opts)
        else:
            _load_decoder(state, opts)
        config = state.config = state.model.config
        state.vocab_size = int(getattr(config, "vocab_size", None) or config.get_text_config().vocab_size)
        return {"kind": source.kind, "model_type": getattr(config, "model_type", None)}


def _load_encoder(state: ExportState, opts: ExportOptions) -> None:
    from transformers import AutoModel

    from gptctl.export.validate import TorchReference

    source = state.source
    base = source.base if source.is_adapter else source
    kwargs = {"gguf_file": base.gguf_file} if base.kind == "gguf" else {}
    state.model = AutoModel.from_pretrained(base.path, trust_remote_code=opts.trust_remote_code, **kwargs).eval()
    state.reference = TorchReference(state.model)


def _load_decoder(state: ExportState, opts: ExportOptions) -> None:
    from gptctl.export.validate import TorchReference, check_lora_merge, fixed_inputs, raise_if_failed
    from gptctl.model_source import load_causal_lm

    source = state.source
    model = load_causal_lm(source)
    if source.kind == "lora-adapter":
        vocab = model.get_base_model().config.vocab_size
        merged, merge = check_lora_merge(model, fixed_inputs(state.tokenizer, vocab), opts.atol)
        if not merge["passed"]:
            raise_if_failed(
                {**merge, "outputs": {"logits (adapter vs merged)": {"max": merge["max_abs_diff"]}}},
                "the merged LoRA adapter",
            )
        state.model, state.reference, state.lora_merge = merged, TorchReference(merged), merge
    elif source.kind == "prompt-adapter":
        from gptctl.export.onnx_export import prompt_prefix_cache

        state.prefix = prompt_prefix_cache(model)
        num_virtual = int(state.prefix[0][0].shape[2])
        state.model, state.reference = model.get_base_model(), TorchReference(model, num_virtual=num_virtual)
    else:
        state.model, state.reference = model, TorchReference(model)


LOAD = LoadModel()
