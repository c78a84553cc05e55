"""Round-to-nearest weight-only quantization: the block grid, and the `int4`/`int8` methods built on it.

Every MatMul with a constant weight becomes MatMulNBits (`block_size` weights per scale, uint8 zero
points), the LM head included: the exporter leaves it untied from the embedding for this. With int4 the
embedding table becomes GatherBlockQuantized, so no fp32 vocabulary matrix remains, and blocks already on
a 4-bit grid (GGUF Q4 weights) are kept exactly (`grid`). int8 uses MatMulNBits too: plain
`quantize_dynamic` (MatMulInteger) measured slower than fp32 for decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def rtn_blocks(x: np.ndarray, bits: int, symmetric: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize rows of `x` [blocks, block_size]: (q uint8, scale float32 [blocks], zero point uint8 [blocks])."""
    levels = (1 << bits) - 1
    x = x.astype(np.float64)
    if symmetric:
        half = 1 << (bits - 1)
        amax = np.abs(x).max(axis=1)
        scale = np.where(amax > 0, amax / (half - 1), 1.0)
        q = np.clip(np.rint(x / scale[:, None]) + half, 0, levels)
        return q.astype(np.uint8), scale.astype(np.float32), np.full(x.shape[0], half, np.uint8)
    lo, hi = x.min(axis=1), x.max(axis=1)
    scale = np.where(hi > lo, (hi - lo) / levels, 1.0)
    zp = np.clip(np.rint(-lo / scale), 0, levels)
    q = np.clip(np.rint(x / scale[:, None] + zp[:, None]), 0, levels)
    return q.astype(np.uint8), scale.astype(np.float32), zp.astype(np.uint8)


@dataclass(frozen=True)
class RoundToNearest:
    """`--quantize int4|int8`: every MatMul weight to `bits` (the LM head to `--head-bits`, symmetric)."""

    name: str
    bits: int
    quantize_embedding: bool  # GatherBlockQuantized only exists for 4 bits
    exact_grid: bool  # keep blocks already on a 4-bit grid exactly (see `grid`)

    def quantize(self, proto: Any, opts: Any) -> tuple[Any, dict[str, Any]]:
        """Quantize `proto` (an onnx ModelProto, changed in place); return (graph, report for the manifest)."""
        from gptctl.export.quant.embedding import quantize_embedding
        from gptctl.export.quant.matmulnbits import ACCURACY_LEVEL, lm_head_weight, replace_matmuls

        block_size = opts.block_size
        lm_head = lm_head_weight(proto)
        matmuls = sum(1 for n in proto.graph.node if n.op_type == "MatMul")
        # The LM head gets 8 bits even in int4 mode unless asked: at 4 bits it alone cost SmolLM2-135M
        # +7% perplexity, at 8 bits nothing measurable, for 28 MB instead of 14 MB (vs 113 MB in fp32).
        head = {lm_head: max(self.bits, opts.head_bits)} if lm_head else {}
        report = replace_matmuls(
            proto,
            bits=self.bits,
            block_size=block_size,
            accuracy_level=ACCURACY_LEVEL,
            bits_for=head,
            symmetric_for=set(head),
            exact_grid=self.exact_grid,
        )
        if self.quantize_embedding:
            proto = quantize_embedding(proto, block_size, accuracy_level=ACCURACY_LEVEL)
        embedding = any(n.op_type == "GatherBlockQuantized" for n in proto.graph.node)
        return proto, {
            "bits": self.bits,
            "block_size": block_size,
            "accuracy_level": ACCURACY_LEVEL,
            "op": "MatMulNBits",
            "matmuls_quantized": report["matmuls_quantized"],
            "matmuls_total": matmuls,
            "exact_grid_weights": report["exact_grid"],
            "rtn_weights": report["rtn"],
            "lm_head_quantized": bool(lm_head and lm_head in report["weights"]),
            "lm_head_bits": report["weights"].get(lm_head) if lm_head else None,
            "embedding_quantized": embedding,
            "method": self.name,
        }


INT8 = RoundToNearest("int8", bits=8, quantize_embedding=False, exact_grid=False)  # the grid is 4-bit
INT4 = RoundToNearest("int4-rtn", bits=4, quantize_embedding=True, exact_grid=True)
