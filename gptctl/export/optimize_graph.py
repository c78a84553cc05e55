"""`--optimize`: ONNX Runtime's transformer fusions, where the architecture is supported."""

from __future__ import annotations

from typing import Any

# transformers model_type -> ONNX Runtime optimizer model_type. ORT's "qwen3" fusions (RMSNorm,
# SkipRMSNorm, RotaryEmbedding) match the Llama-family graphs optimum exports; validation checks the result.
FUSIONS = {
    "gpt2": "gpt2",
    "gpt_neox": "gpt_neox",
    "phi": "phi",
    "qwen3": "qwen3",
    "llama": "qwen3",
    "mistral": "qwen3",
    "qwen2": "qwen3",
}


def optimize_transformer(proto: Any, config: Any) -> tuple[Any, dict[str, Any]]:
    """Apply ORT's offline fusions; return (graph, report). Unsupported architectures are left as they are."""
    model_type = getattr(config, "model_type", "")
    ort_type = FUSIONS.get(model_type)
    if ort_type is None:
        return proto, {
            "applied": False,
            "reason": f"ONNX Runtime has no transformer fusions for model type {model_type!r}",
            "supported": sorted(FUSIONS),
        }
    from onnxruntime.transformers.optimizer import optimize_model

    before = len(proto.graph.node)
    heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0) or 0)
    optimized = optimize_model(proto, model_type=ort_type, num_heads=heads, hidden_size=hidden, opt_level=0)
    out = optimized.model
    fused = optimized.get_fused_operator_statistics() if hasattr(optimized, "get_fused_operator_statistics") else {}
    report = {
        "applied": True,
        "ort_model_type": ort_type,
        "nodes_before": before,
        "nodes_after": len(out.graph.node),
        "fused": {k: v for k, v in fused.items() if v},
    }
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        report.update(trim_rotary_caches(out, int(positions)))
    return out, report


# The initializers ORT's RotaryEmbedding fusion adds (onnxruntime/transformers/fusion_rotary_attention.py).
ROTARY_CACHES = ("cos_cache", "sin_cache")


def trim_rotary_caches(proto: Any, positions: int) -> dict[str, Any]:
    """Cut the fused RotaryEmbedding's cos/sin tables to the model's own context length.

    ORT builds them for 131,072 positions whatever the model (fusion_rotary_attention.py: "to cover most
    LLM contexts"): on SmolLM2-135M (8,192 positions, head_dim 64) that is 2 x 16.8 MB of fp32, which made
    the --optimize int4 export 148.4 MB against 115.2 MB without it, measured. Rows past the model's
    max_position_embeddings are positions it was never trained on, and `serve` bounds a request by that
    context window (an ORT RotaryEmbedding past its table fails rather than computing silently).
    """
    from onnx import numpy_helper

    trimmed = {}
    for init in proto.graph.initializer:
        if init.name in ROTARY_CACHES and len(init.dims) == 2 and init.dims[0] > positions:
            table = numpy_helper.to_array(init)[:positions]
            trimmed[init.name] = [int(init.dims[0]), positions]
            init.CopyFrom(numpy_helper.from_array(table.copy(), name=init.name))
    return {"rotary_cache_rows": trimmed} if trimmed else {}
