"""Mixed precision the way llama.cpp's Q4_K_M chooses it: attention V (the fused q|k|v in the fast layout) and
MLP down projections at 8 bits in the first and last eighth of the layers and in every third layer between, the
rest at 4 bits.

llama.cpp (`llama_tensor_get_type`, `use_more_bits`) gives those tensors Q6_K; MatMulNBits has 4 and 8
bits, so they get 8 here. The LM head is handled by the method (8 bits, or the shared tied table).
"""

from __future__ import annotations

from typing import Any

# Names of the tensors Q4_K_M promotes, as the ONNX node names spell them per architecture family. The fast
# Llama graph (export/llama_graph.py) has one fused q|k|v MatMul per layer, and one MatMulNBits has one width,
# so where Q4_K_M promotes attn_v the whole qkv_proj goes to 8 bits (optimum's layout keeps v_proj alone).
PROMOTED_KINDS = {
    "v_proj": "attn_v",
    "qkv_proj": "attn_v",
    "down_proj": "ffn_down",
    "dense_4h_to_h": "ffn_down",
    "fc2": "ffn_down",
}


def use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's rule, with its integer arithmetic (30 layers: 0-2, 26-29 and 5, 8, ..., 23)."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def promoted_weights(names: dict[str, dict[str, Any]]) -> list[str]:
    """The weights (from `rewrite.weight_names`) that Q4_K_M's rule puts at more bits, in graph order."""
    layers = 1 + max((v["layer"] for v in names.values() if v["layer"] is not None), default=-1)
    return [
        w
        for w, v in names.items()
        if v["kind"] in PROMOTED_KINDS and v["layer"] is not None and use_more_bits(v["layer"], layers)
    ]
