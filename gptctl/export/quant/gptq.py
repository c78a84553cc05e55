"""GPTQ (Frantar et al., 2022) on one MatMul weight, in numpy: quantize input rows one at a time and push
each row's rounding error onto the rows not yet quantized, through the inverse of H = E[x x^T] measured on
calibration text (`calibration.collect_stats(hessian=True)`). Each block of `block_size` rows gets its
grid (`search.symmetric_search`, importance-weighted) from the weights as updated when the block starts.

ONNX Runtime's own GPTQ needs Intel neural-compressor (not a gptctl dependency); this one is ~60 lines.
"""

from __future__ import annotations

import numpy as np

from gptctl.export.quant.search import symmetric_search

DAMPING = 0.01  # of the mean diagonal of H, added to it: GPTQ's default, keeps the Cholesky stable
LAZY_ROWS = 128  # rows updated together before the rest of the matrix (a multiple of every block size)


def gptq_grid(
    w: np.ndarray, bits: int, block_size: int, stats: dict | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`rewrite.Grid` for GPTQ: w [K, N] -> (q [N, blocks, bs], scale [N, blocks], zp [N, blocks]).

    Without a Hessian in `stats` it is the plain symmetric search (nothing to propagate errors through).
    """
    k, n = w.shape
    blocks = -(-k // block_size)
    kp = blocks * block_size
    hess = None if stats is None else stats.get("hessian")
    work = np.zeros((kp, n))
    work[:k] = w
    h = np.eye(kp)
    if hess is not None:
        h[:k, :k] = hess
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    work[dead] = 0.0
    h += DAMPING * np.mean(np.diag(h)) * np.eye(kp)
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper triangular
    q = np.zeros((n, blocks, block_size), np.uint8)
    scale = np.zeros((n, blocks), np.float32)
    zp = np.zeros((n, blocks), np.uint8)
    imp = np.diag(h)
    lazy = max(LAZY_ROWS // block_size, 1) * block_size
    for i1 in range(0, kp, lazy):
        i2 = min(i1 + lazy, kp)
        w1 = work[i1:i2].copy()
        err = np.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            row = i1 + i
            b, j = divmod(row, block_size)
            if j == 0:
                group = w1[i : i + block_size].T  # [N, bs]: this block's weights as updated so far
                weights = np.tile(imp[row : row + block_size], (n, 1))
                _, s, z = symmetric_search(group, bits, weights)
                scale[:, b], zp[:, b] = s, z
            s, z = scale[:, b].astype(np.float64), zp[:, b].astype(np.float64)
            safe = np.where(s == 0, 1.0, s)
            level = np.clip(np.rint(w1[i] / safe) + z, 0, (1 << bits) - 1)
            q[:, b, j] = level
            e = (w1[i] - (level - z) * s) / h1[i, i]
            w1[i:] -= np.outer(h1[i, i:], e)
            err[i] = e
        work[i2:] -= hinv[i1:i2, i2:].T @ err
    return q, scale, zp
