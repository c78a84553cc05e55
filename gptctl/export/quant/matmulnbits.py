"""Packing block-quantized weights into ONNX Runtime's MatMulNBits, and the graph rewrite that uses it.

Weights are blocked along K, `block_size` per scale; the grids themselves live in `rtn` (round-to-nearest)
and `grid` (exact repack of weights already on a 4-bit grid). Zero points stay uint8: float zero points
drop MatMulNBits on CPU to a dequantize-then-GEMM path (measured ~25x slower per call).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gptctl.export.quant.grid import RESIDUAL_PASSES, grid_blocks, residual_rows
from gptctl.export.quant.rtn import rtn_blocks

# accuracy_level 4: activations are quantized to int8 per block inside MatMulNBits on CPU, which is what
# makes int4/int8 decode fast there; GPU kernels ignore it.
ACCURACY_LEVEL = 4


def _pack(q: np.ndarray, zp: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """q [N, blocks, block_size], zp [N, blocks] -> MatMulNBits B and zero_points."""
    if bits == 4:
        b = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        if zp.shape[1] % 2:
            zp = np.concatenate([zp, np.zeros((zp.shape[0], 1), np.uint8)], axis=1)
        return b, (zp[:, 0::2] | (zp[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
    return q.astype(np.uint8), zp.astype(np.uint8).reshape(-1)


def quantize_matmul_weight(
    w: np.ndarray, bits: int, block_size: int, *, symmetric: bool = False, exact_grid: bool = True
) -> dict[str, Any]:
    """A MatMul weight [K, N] -> MatMulNBits inputs; `K` is K + number of blocks when the residual rows are used."""
    k, n = w.shape
    blocks = -(-k // block_size)
    padded = np.zeros((blocks * block_size, n), dtype=np.float32)
    padded[:k] = w
    rows = padded.T.reshape(n * blocks, block_size)  # per output column, consecutive blocks along K
    exact = grid_blocks(rows) if (bits == 4 and exact_grid and not symmetric and k % block_size == 0) else None
    if exact is None:
        q, scale, zp = rtn_blocks(rows, bits, symmetric)
        b, zpp = _pack(q.reshape(n, blocks, block_size), zp.reshape(n, blocks), bits)
        return {"B": b, "scales": scale, "zero_points": zpp, "K": k, "blocks": blocks, "residual": False}
    q, scale, zp, residual = exact
    # Extra K rows: each block's residual, against that block's activation sum (see `replace_matmuls`).
    qs, ss, zs, seg = residual_rows(residual, n, blocks, block_size, bits)
    qs.insert(0, q.reshape(n, blocks, block_size))
    ss.insert(0, scale.reshape(n, blocks))
    zs.insert(0, zp.reshape(n, blocks))
    b, zpp = _pack(np.concatenate(qs, axis=1), np.concatenate(zs, axis=1), bits)
    return {
        "B": b,
        "scales": np.concatenate(ss, axis=1).reshape(-1).astype(np.float32),
        "zero_points": zpp,
        "K": k + RESIDUAL_PASSES * seg,
        "blocks": blocks,
        "segment": seg,
        "residual": True,
    }


def dequantize(parts: dict[str, Any], k: int, n: int, bits: int, block_size: int) -> np.ndarray:
    """Inverse of `quantize_matmul_weight` for round-to-nearest parts (tests and error figures)."""
    blocks = parts["blocks"]
    b = parts["B"]
    if bits == 4:
        q = np.empty(b.shape[:-1] + (b.shape[-1] * 2,), np.uint8)
        q[..., 0::2], q[..., 1::2] = b & 0x0F, b >> 4
        zpb = parts["zero_points"].reshape(n, -1)
        zp = np.empty((n, zpb.shape[1] * 2), np.uint8)
        zp[:, 0::2], zp[:, 1::2] = zpb & 0x0F, zpb >> 4
        zp = zp[:, :blocks]
    else:
        q, zp = b, parts["zero_points"].reshape(n, blocks)
    s = parts["scales"].reshape(n, blocks)
    w = (q.astype(np.float32) - zp[..., None]) * s[..., None]
    return w.reshape(n, blocks * block_size)[:, :k].T


def lm_head_weight(proto: Any) -> str | None:
    """The initializer of the MatMul that produces `logits` (None when the head is not a plain MatMul)."""
    inits = {t.name for t in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    node = producers.get("logits")
    seen = 0
    while node is not None and seen < 4:  # logits may come after a Cast/Identity
        if node.op_type == "MatMul":
            return node.input[1] if node.input[1] in inits else None
        node = producers.get(node.input[0])
        seen += 1
    return None


class _BlockSums:
    """concat(x, x @ E) per distinct (input, K, segment): E sums each block of K into one column, once
    per residual pass, each pass padded to a whole block so its rows get their own scales. E is 0/1, so
    it is itself stored exactly as a 4-bit MatMulNBits (an fp32 E cost SmolLM2 36 MB of reads per token)."""

    def __init__(self, block_size: int, new_nodes: list, new_inits: list):
        self.block_size, self.nodes, self.inits = block_size, new_nodes, new_inits
        self.augmented: dict[tuple[str, int, int], str] = {}

    def __call__(self, x: str, k: int, blocks: int, seg: int) -> str:
        from onnx import helper, numpy_helper

        key, bs = (x, k, seg), self.block_size
        if key not in self.augmented:
            p = f"gptctl/nbits/{len(self.augmented)}"
            e = np.zeros((k, RESIDUAL_PASSES * seg), np.float32)
            for r in range(RESIDUAL_PASSES):
                for b in range(blocks):
                    e[b * bs : (b + 1) * bs, r * seg + b] = 1.0
            ind = quantize_matmul_weight(e, 4, bs, exact_grid=False)
            self.inits.extend(
                [
                    numpy_helper.from_array(ind["B"], p + "/sum_blocks"),
                    numpy_helper.from_array(ind["scales"], p + "/sum_blocks_scales"),
                    numpy_helper.from_array(ind["zero_points"], p + "/sum_blocks_zp"),
                ]
            )
            self.nodes.extend(
                [
                    helper.make_node(
                        "MatMulNBits",
                        [x, p + "/sum_blocks", p + "/sum_blocks_scales", p + "/sum_blocks_zp"],
                        [p + "/sums"],
                        domain="com.microsoft",
                        K=k,
                        N=e.shape[1],
                        bits=4,
                        block_size=bs,
                        accuracy_level=0,
                    ),
                    helper.make_node("Concat", [x, p + "/sums"], [p + "/augmented"], axis=-1),
                ]
            )
            self.augmented[key] = p + "/augmented"
        return self.augmented[key]


def replace_matmuls(
    proto: Any,
    *,
    bits: int,
    block_size: int,
    accuracy_level: int,
    bits_for: dict[str, int] | None = None,
    symmetric_for: frozenset[str] | set[str] = frozenset(),
    exact_grid: bool = True,
) -> dict[str, Any]:
    """Replace every MatMul whose B is a 2-D float initializer by MatMulNBits; return a report.

    `bits_for` overrides the width of given weights (the LM head at 8 bits); `symmetric_for` names weights
    quantized on a symmetric grid; `exact_grid` keeps 4-bit blocks already on a grid exactly (`grid`).
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    new_nodes, new_inits, drop = [], [], set()
    block_sums = _BlockSums(block_size, new_nodes, new_inits)
    report = {"matmuls_quantized": 0, "exact_grid": 0, "rtn": 0, "weights": {}}
    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        t = inits.get(weight) if weight else None
        if t is None or len(t.dims) != 2 or t.data_type != 1 or t.dims[0] < block_size:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(t)
        n = w.shape[1]
        nbits = (bits_for or {}).get(weight, bits)
        parts = quantize_matmul_weight(w, nbits, block_size, symmetric=weight in symmetric_for, exact_grid=exact_grid)
        base = f"{weight}_Q{nbits}"
        new_inits += [
            numpy_helper.from_array(parts["B"], base),
            numpy_helper.from_array(parts["scales"], base + "_scales"),
            numpy_helper.from_array(parts["zero_points"], base + "_zp"),
        ]
        x = (
            block_sums(node.input[0], w.shape[0], parts["blocks"], parts["segment"])
            if parts["residual"]
            else node.input[0]
        )
        new_nodes.append(
            helper.make_node(
                "MatMulNBits",
                [x, base, base + "_scales", base + "_zp"],
                list(node.output),
                name=(node.name or weight) + "_Q",
                domain="com.microsoft",
                K=parts["K"],
                N=n,
                bits=nbits,
                block_size=block_size,
                accuracy_level=accuracy_level,
            )
        )
        report["matmuls_quantized"] += 1
        report["exact_grid" if parts["residual"] else "rtn"] += 1
        report["weights"][weight] = nbits
        if users.get(weight, 0) == 1:
            drop.add(weight)
    del graph.node[:]
    graph.node.extend(new_nodes)
    kept = [t for t in graph.initializer if t.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return report
