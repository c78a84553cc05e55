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
    return out, {
        "applied": True,
        "ort_model_type": ort_type,
        "nodes_before": before,
        "nodes_after": len(out.graph.node),
        "fused": {k: v for k, v in fused.items() if v},
    }
