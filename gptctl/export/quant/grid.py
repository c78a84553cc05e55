"""Exact repack of weights that already sit on a 4-bit grid with a float offset.

A GGUF Q4_1 model, dequantized, is the usual input here: w = d*j + m per block. MatMulNBits can only
shift a block by an integer zero point, so round-to-nearest would move every weight of a block by the
same amount and those errors add up in every dot product (measured on SmolLM2-135M: +25% perplexity).
Instead the block keeps q = j and scale d, and the left-over offset r = m + d*z is applied through K
extra inputs: the block sums of the activations (`matmulnbits.replace_matmuls` appends them), against
extra weight rows holding r, quantized in two passes so that what remains is ~1/900 of its range.
"""

from __future__ import annotations

import numpy as np

from gptctl.export.quant.rtn import rtn_blocks

GRID_TOLERANCE = 1e-3  # |j - round(j)| in grid steps for a block to count as already 4-bit
RESIDUAL_PASSES = 2  # residual rows: 4-bit, then 4-bit of what that left (error ~ range/900)


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


def residual_rows(
    residual: np.ndarray, n: int, blocks: int, block_size: int, bits: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], int]:
    """The extra K rows holding each block's residual, `RESIDUAL_PASSES` times (each pass quantizes what
    the previous one left): lists of (q [n, seg/bs, bs], scale [n, seg/bs], zp [n, seg/bs]) and `seg`,
    the rows per pass (the block count rounded up to whole blocks, so the rows get their own scales)."""
    seg = -(-blocks // block_size) * block_size
    left = np.zeros((n, seg))
    left[:, :blocks] = residual.reshape(n, blocks)
    qs, ss, zs = [], [], []
    for _ in range(RESIDUAL_PASSES):
        q2, s2, z2 = rtn_blocks(left.reshape(-1, block_size), bits)
        qs.append(q2.reshape(n, -1, block_size))
        ss.append(s2.reshape(n, -1))
        zs.append(z2.reshape(n, -1))
        left = left - ((q2.astype(np.float64) - z2[:, None]) * s2[:, None]).reshape(n, seg)
    return qs, ss, zs, seg
