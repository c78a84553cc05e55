"""MatMul -> MatMulNBits with a per-weight plan (bits and grid), and the tied embedding/LM head stored once.

`matmulnbits.replace_matmuls` applies one grid to every weight; methods that choose per tensor (mixed
precision, calibrated search, GPTQ) build a `WeightPlan` per weight and call `apply_plan`. Blocks already
on a 4-bit grid (GGUF-origin weights) still go through `matmulnbits.quantize_matmul_weight`'s exact repack.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gptctl.export.quant.grid import grid_blocks
from gptctl.export.quant.matmulnbits import _BlockSums, _pack, quantize_matmul_weight

# grid(w [K, N] padded to whole blocks, bits, block_size, stats) -> (q [N, blocks, bs], scale [N, blocks], zp [N, blocks])  # noqa: E501
Grid = Callable[[np.ndarray, int, int, dict | None], tuple[np.ndarray, np.ndarray, np.ndarray]]

_LAYER = re.compile(r"(?:layers|h|layer|blocks)[./](\d+)[./]")
_KIND = re.compile(r"/([A-Za-z0-9_]+)/MatMul(?:_\d+)?$")


@dataclass(frozen=True)
class WeightPlan:
    """What one MatMul weight becomes; `stats` carries calibration figures the grid may use."""

    bits: int
    grid: Grid
    grid_name: str
    symmetric: bool


def weight_names(proto: Any, min_k: int) -> dict[str, dict[str, Any]]:
    """Quantizable MatMul weights: name -> {layer (int or None), kind (q_proj, down_proj, lm_head...), K, N}."""
    inits = {t.name: t for t in proto.graph.initializer}
    found = {}
    for node in proto.graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        t = inits.get(node.input[1])
        if t is None or len(t.dims) != 2 or t.data_type != 1 or t.dims[0] < min_k:
            continue
        layer = _LAYER.search(node.name or "")
        kind = _KIND.search(node.name or "")
        found[node.input[1]] = {
            "layer": int(layer.group(1)) if layer else None,
            "kind": kind.group(1) if kind else (node.name or node.input[1]),
            "K": int(t.dims[0]),
            "N": int(t.dims[1]),
        }
    return found


def block_rows(w: np.ndarray, block_size: int) -> tuple[np.ndarray, int]:
    """[K, N] -> rows [N * blocks, block_size] (per output column, consecutive blocks along K), blocks."""
    k, n = w.shape
    blocks = -(-k // block_size)
    padded = np.zeros((blocks * block_size, n), dtype=np.float64)
    padded[:k] = w
    return padded.T.reshape(n * blocks, block_size), blocks


def rows_grid(fn: Callable) -> Grid:
    """A Grid from a row function fn(rows, bits, importance rows) (the `search` module's signature)."""

    def grid(w: np.ndarray, bits: int, block_size: int, stats: dict | None):
        rows, blocks = block_rows(w, block_size)
        n = w.shape[1]
        importance = None
        if stats is not None and stats.get("importance") is not None:
            imp = np.zeros(blocks * block_size)
            imp[: w.shape[0]] = stats["importance"]
            # Floor: a channel never seen active still counts a little (its weight is not free).
            imp = np.maximum(imp, 1e-6 * max(float(imp.max()), 1e-12))
            importance = np.tile(imp.reshape(blocks, block_size), (n, 1))
        q, scale, zp = fn(rows, bits, importance)
        return q.reshape(n, blocks, block_size), scale.reshape(n, blocks), zp.reshape(n, blocks)

    return grid


def dequantize_parts(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, k: int) -> np.ndarray:
    """(q [N, blocks, bs], scale, zp) -> w [K, N] (error figures and tests)."""
    n = q.shape[0]
    w = (q.astype(np.float64) - zp[..., None]) * scale[..., None]
    return w.reshape(n, -1)[:, :k].T


def relative_error(w: np.ndarray, wq: np.ndarray, figures: dict | None) -> float:
    """|W - Wq|^2 / |W|^2, each input channel weighted by its mean squared activation when calibrated: the
    share of the layer's output energy the grid loses (rounded to 4 significant digits for the manifest)."""
    imp = np.ones(w.shape[0]) if not figures or figures.get("importance") is None else figures["importance"]
    num = float((imp[:, None] * (w - wq) ** 2).sum())
    den = float((imp[:, None] * w.astype(np.float64) ** 2).sum())
    return float(f"{num / den:.4g}") if den > 0 else 0.0


def _exact_parts(w: np.ndarray, block_size: int) -> dict[str, Any] | None:
    """The exact 4-bit repack when every block of `w` is already on a 4-bit grid (GGUF-origin), else None."""
    if w.shape[0] % block_size:
        return None
    rows, _ = block_rows(w, block_size)
    if grid_blocks(rows) is None:
        return None
    return quantize_matmul_weight(w, 4, block_size, exact_grid=True)


def apply_plan(
    proto: Any,
    plan: dict[str, WeightPlan],
    *,
    block_size: int,
    accuracy_level: int,
    stats: Any = None,
    exact_grid: bool = True,
) -> dict[str, Any]:
    """Replace the MatMuls whose weights `plan` names by MatMulNBits; return a report per weight.

    `stats`: gptctl.export.quant.calibration.ActivationStats or None. `exact_grid`: 4-bit weights
    already on a grid keep it exactly (the planned grid is not used for them).
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
    report: dict[str, Any] = {"matmuls_quantized": 0, "exact_grid": 0, "searched": 0, "weights": {}}
    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight not in plan:
            new_nodes.append(node)
            continue
        choice = plan[weight]
        w = numpy_helper.to_array(inits[weight])
        k, n = w.shape
        parts = _exact_parts(w, block_size) if (exact_grid and choice.bits == 4) else None
        if parts is None:
            figures = _stats_for(stats, weight)
            q, scale, zp = choice.grid(w, choice.bits, block_size, figures)
            b, zpp = _pack(q, zp, choice.bits)
            parts = {
                "B": b,
                "scales": scale.reshape(-1).astype(np.float32),
                # MatMulNBits defaults a missing zero point to 2^(bits-1): a symmetric grid needs none stored
                # (0.125 bits per weight at 4 bits, block 32; 1.7 MB on SmolLM2-135M).
                "zero_points": None if np.all(zp == 1 << (choice.bits - 1)) else zpp,
                "K": k,
                "blocks": q.shape[1],
                "residual": False,
                "rel_error": relative_error(w, dequantize_parts(q, scale, zp, k), figures),
            }
        base = f"{weight}_Q{choice.bits}"
        new_inits += [
            numpy_helper.from_array(parts["B"], base),
            numpy_helper.from_array(parts["scales"], base + "_scales"),
        ]
        zp_input = [] if parts["zero_points"] is None else [base + "_zp"]
        if zp_input:
            new_inits.append(numpy_helper.from_array(parts["zero_points"], base + "_zp"))
        x = block_sums(node.input[0], k, parts["blocks"], parts["segment"]) if parts["residual"] else node.input[0]
        new_nodes.append(
            helper.make_node(
                "MatMulNBits",
                [x, base, base + "_scales", *zp_input],
                list(node.output),
                name=(node.name or weight) + "_Q",
                domain="com.microsoft",
                K=parts["K"],
                N=n,
                bits=choice.bits,
                block_size=block_size,
                accuracy_level=accuracy_level,
            )
        )
        report["matmuls_quantized"] += 1
        report["exact_grid" if parts["residual"] else "searched"] += 1
        report["weights"][weight] = {
            "bits": choice.bits,
            "grid": "exact" if parts["residual"] else choice.grid_name,
            "rel_error": parts.get("rel_error", 0.0),
        }
        if users.get(weight, 0) == 1:
            drop.add(weight)
    _replace(proto, new_nodes, new_inits, drop)
    return report


def _stats_for(stats: Any, weight: str) -> dict | None:
    if stats is None or weight not in stats.importance:
        return None
    return {"importance": stats.importance[weight], "hessian": stats.hessian.get(weight)}


def _replace(proto: Any, nodes: list, inits: list, drop: set) -> None:
    from onnx import helper

    graph = proto.graph
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(kept + inits)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
