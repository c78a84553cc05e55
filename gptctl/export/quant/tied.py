"""A tied embedding / LM head stored once, at 8 bits, read by both GatherBlockQuantized and MatMulNBits.

The exporter unties the LM head for quantization; the round-to-nearest methods then store the matrix twice
(a 4-bit embedding, ~18 MB, and an 8-bit head, ~33 MB, on SmolLM2-135M). The two layouts agree when the
blocks run along the hidden size: MatMulNBits' B [vocab, blocks, block_size] is the embedding table
[vocab, hidden] reshaped, and both ops take scales and zero points [vocab, blocks]. So one uint8 table
serves both; a Reshape (constant-folded by ONNX Runtime at load) gives MatMulNBits its 3-D view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# Block sizes tried for the 8-bit tied table, widest first. On the pruned SmolLM2-135M (hidden 576: 64 divides it,
# 128 does not) block 64 instead of 32 halves its scales (-1.8 MB); int4's KL to fp32 on the eval text went from
# 0.2005 to 0.2062 and its perplexity cost from -2.9% to -2.7% (bench_peers --quality-only), the room that buys
# at 8 bits elsewhere is worth more (int4-auto).
TIED_BLOCKS = (128, 64)


def find_tied(proto: Any, head: str | None) -> tuple[Any, str] | None:
    """(the Gather node reading the embedding, its table name) when the LM head `head` is its transpose."""
    from onnx import numpy_helper

    if head is None:
        return None
    inits = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        table, w = inits[node.input[0]], inits[head]
        if list(table.dims) != list(w.dims)[::-1]:
            continue
        if np.array_equal(numpy_helper.to_array(table), numpy_helper.to_array(w).T):
            return node, node.input[0]
    return None


def share_tied(
    proto: Any, head: str, *, block_size: int, accuracy_level: int, row_grid: Callable, importance: np.ndarray | None
) -> dict[str, Any] | None:
    """Quantize a tied embedding/head once at 8 bits (`row_grid(rows, bits, importance)`, symmetric
    search); rewrite the Gather and the head MatMul to read it. None (graph untouched) when not tied."""
    from onnx import helper, numpy_helper

    tied = find_tied(proto, head)
    if tied is None:
        return None
    gather, table_name = tied
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    table = numpy_helper.to_array(inits[table_name]).astype(np.float64)  # [vocab, hidden]
    vocab, hidden = table.shape
    if hidden % block_size:
        return None
    # 8 bits leave little to gain from small blocks: wider ones where the hidden size allows (see TIED_BLOCKS).
    block_size = next((b for b in TIED_BLOCKS if b >= block_size and hidden % b == 0), block_size)
    blocks = hidden // block_size
    imp = None
    if importance is not None:
        imp = np.tile(
            np.maximum(importance, 1e-6 * max(float(importance.max()), 1e-12)).reshape(blocks, block_size), (vocab, 1)
        )
    q, scale, zp = row_grid(table.reshape(vocab * blocks, block_size), 8, imp)
    p = "gptctl/tied"
    new_inits = [
        numpy_helper.from_array(q.reshape(vocab, hidden), p + "/table_Q8"),
        numpy_helper.from_array(scale.reshape(vocab, blocks).astype(np.float32), p + "/scales"),
        numpy_helper.from_array(np.array([vocab, blocks, block_size], np.int64), p + "/b_shape"),
    ]
    # Both ops default a missing zero point to 128 for 8 bits: a symmetric grid needs none stored.
    zp_input = [] if np.all(zp == 128) else [p + "/zp"]
    if zp_input:
        new_inits.append(numpy_helper.from_array(zp.reshape(vocab, blocks), p + "/zp"))
    nodes = []
    for node in graph.node:
        if node is gather:
            nodes.append(
                helper.make_node(
                    "GatherBlockQuantized",
                    [p + "/table_Q8", node.input[1], p + "/scales", *zp_input],
                    list(node.output),
                    name=(node.name or "embed") + "_Q8",
                    domain="com.microsoft",
                    bits=8,
                    block_size=block_size,
                    gather_axis=0,
                    quantize_axis=1,
                )
            )
        elif node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] == head:
            nodes.append(helper.make_node("Reshape", [p + "/table_Q8", p + "/b_shape"], [p + "/head_B"]))
            nodes.append(
                helper.make_node(
                    "MatMulNBits",
                    [node.input[0], p + "/head_B", p + "/scales", *zp_input],
                    list(node.output),
                    name=(node.name or "lm_head") + "_Q8",
                    domain="com.microsoft",
                    K=hidden,
                    N=vocab,
                    bits=8,
                    block_size=block_size,
                    accuracy_level=accuracy_level,
                )
            )
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name not in (table_name, head)]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return {
        "table": table_name,
        "bits": 8,
        "block_size": block_size,
        "bytes": int(q.size + scale.size * 4 + (zp.size if zp_input else 0)),
    }
