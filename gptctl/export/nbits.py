"""Block-wise weight quantization to ONNX Runtime's MatMulNBits (weights blocked along K).

Two grids per block of `block_size` weights:
* Round-to-nearest with a uint8 zero point (min/max), as ONNX Runtime's own quantizer does.
* Exact repack, for weights that already sit on a 4-bit grid with a float offset (a GGUF Q4_1 model,
  dequantized, is the usual input here): w = d*j + m. MatMulNBits can only shift a block by an integer
  zero point, so RTN would move every weight of a block by the same amount and those errors add up in
  every dot product (measured on SmolLM2-135M: +25% perplexity). Instead the block keeps q = j and scale d,
  and the left-over offset r = m + d*z is applied through K extra inputs: the block sums of the
  activations, appended to them once per distinct MatMul input, against extra weight rows holding r
  (quantized in two passes, so what remains is ~1/900 of its range).
Zero points stay uint8: float zero points drop MatMulNBits on CPU to a dequantize-then-GEMM path
(measured ~25x slower per call).
"""

from __future__ import annotations

from typing import Any

import numpy as np

GRID_TOLERANCE = 1e-3  # |j - round(j)| in grid steps for a block to count as already 4-bit
RESIDUAL_PASSES = 2  # residual rows: 4-bit, then 4-bit of what that left (error ~ range/900)


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


def grid_blocks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Exact 4-bit decomposition of blocks already on a 16-level grid, or None when they are not.

    Returns (q, scale, zero point, residual) with x = scale * (q - zp) + residual for every weight.
    """
    x = x.astype(np.float64)
    lo, hi = x.min(axis=1), x.max(axis=1)
    step = (hi - lo) / 15
    flat = step <= 0
    safe = np.where(flat, 1.0, step)
    j = (x - lo[:, None]) / safe[:, None]
    if np.abs(j - np.rint(j)).max() > GRID_TOLERANCE:
        return None
    q = np.clip(np.rint(j), 0, 15)
    zp = np.clip(np.rint(-lo / safe), 0, 15)
    zp = np.where(flat, 0, zp)
    q = np.where(flat[:, None], 0, q)
    residual = lo + safe * zp  # what scale * (q - zp) misses, the same for the whole block
    return q.astype(np.uint8), safe.astype(np.float32), zp.astype(np.uint8), residual


def _pack(q: np.ndarray, zp: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """q [N, blocks, block_size], zp [N, blocks] -> MatMulNBits B and zero_points."""
    if bits == 4:
        b = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        if zp.shape[1] % 2:
            zp = np.concatenate([zp, np.zeros((zp.shape[0], 1), np.uint8)], axis=1)
        return b, (zp[:, 0::2] | (zp[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
    return q.astype(np.uint8), zp.astype(np.uint8).reshape(-1)


def quantize_matmul_weight(w: np.ndarray, bits: int, block_size: int, *, symmetric: bool = False,
                           exact_grid: bool = True) -> dict[str, Any]:
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
    # Two passes: the second holds what 4-bit rounding of the first left over.
    seg = -(-blocks // block_size) * block_size
    left = np.zeros((n, seg))
    left[:, :blocks] = residual.reshape(n, blocks)
    qs, ss, zs = [q.reshape(n, blocks, block_size)], [scale.reshape(n, blocks)], [zp.reshape(n, blocks)]
    for _ in range(RESIDUAL_PASSES):
        q2, s2, z2 = rtn_blocks(left.reshape(-1, block_size), bits)
        qs.append(q2.reshape(n, -1, block_size))
        ss.append(s2.reshape(n, -1))
        zs.append(z2.reshape(n, -1))
        left = left - ((q2.astype(np.float64) - z2[:, None]) * s2[:, None]).reshape(n, seg)
    b, zpp = _pack(np.concatenate(qs, axis=1), np.concatenate(zs, axis=1), bits)
    return {"B": b, "scales": np.concatenate(ss, axis=1).reshape(-1).astype(np.float32), "zero_points": zpp,
            "K": k + RESIDUAL_PASSES * seg, "blocks": blocks, "segment": seg, "residual": True}


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


def replace_matmuls(proto: Any, *, bits: int, block_size: int, accuracy_level: int, bits_for: dict[str, int] | None = None,
                    symmetric_for: frozenset[str] | set[str] = frozenset(), exact_grid: bool = True) -> dict[str, Any]:
    """Replace every MatMul whose B is a 2-D float initializer by MatMulNBits; return a report.

    `bits_for` overrides the width of given weights (the LM head at 8 bits); `symmetric_for` names weights
    quantized on a symmetric grid.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    augmented: dict[tuple[str, int], str] = {}  # (input, blocks) -> concat(input, block sums)
    new_nodes, new_inits, drop = [], [], set()
    report = {"matmuls_quantized": 0, "exact_grid": 0, "rtn": 0, "weights": {}}

    def block_sums(x: str, k: int, blocks: int, seg: int) -> str:
        # concat(x, x @ E): E sums each block of K into one column, once per residual pass, each pass
        # padded to a whole block so its rows get their own scales. E is 0/1, so it is itself stored
        # exactly as a 4-bit MatMulNBits (an fp32 E cost SmolLM2 36 MB of reads per token).
        key = (x, k, seg)
        if key not in augmented:
            p = f"gptctl/nbits/{len(augmented)}"
            e = np.zeros((k, RESIDUAL_PASSES * seg), np.float32)
            for r in range(RESIDUAL_PASSES):
                for b in range(blocks):
                    e[b * block_size:(b + 1) * block_size, r * seg + b] = 1.0
            ind = quantize_matmul_weight(e, 4, block_size, exact_grid=False)
            new_inits.extend([numpy_helper.from_array(ind["B"], p + "/sum_blocks"),
                              numpy_helper.from_array(ind["scales"], p + "/sum_blocks_scales"),
                              numpy_helper.from_array(ind["zero_points"], p + "/sum_blocks_zp")])
            new_nodes.extend([
                helper.make_node("MatMulNBits", [x, p + "/sum_blocks", p + "/sum_blocks_scales", p + "/sum_blocks_zp"],
                                 [p + "/sums"], domain="com.microsoft", K=k, N=e.shape[1], bits=4, block_size=block_size,
                                 accuracy_level=0),
                helper.make_node("Concat", [x, p + "/sums"], [p + "/augmented"], axis=-1),
            ])
            augmented[key] = p + "/augmented"
        return augmented[key]

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
        new_inits += [numpy_helper.from_array(parts["B"], base), numpy_helper.from_array(parts["scales"], base + "_scales"),
                      numpy_helper.from_array(parts["zero_points"], base + "_zp")]
        x = block_sums(node.input[0], w.shape[0], parts["blocks"], parts["segment"]) if parts["residual"] else node.input[0]
        new_nodes.append(helper.make_node("MatMulNBits", [x, base, base + "_scales", base + "_zp"], list(node.output),
                                          name=(node.name or weight) + "_Q", domain="com.microsoft", K=parts["K"], N=n,
                                          bits=nbits, block_size=block_size, accuracy_level=accuracy_level))
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
