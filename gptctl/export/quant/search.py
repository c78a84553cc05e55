"""Block grids chosen by error search instead of by the block's extremes (the grid math; packing is in
`matmulnbits`).

Round-to-nearest fixes a block's scale by its min and max; here each block tries a few scales and keeps
the one with the least (importance-weighted) squared error, as llama.cpp's k-quants do, then refits the
scale by least squares on the chosen levels. `importance` is one weight per input channel (K): the mean
squared activation from calibration data (what llama.cpp calls an imatrix), or uniform without data.

Symmetric grids put 0 on level 2^(bits-1) for every block, so the zeros of a pruned matrix stay exact and
cost no grid step; the asymmetric search keeps integer zero points, so 0 is exact there too.
"""

from __future__ import annotations

import numpy as np

# Candidate scales: the block's largest |w| lands on level `t` for t in this range (t = 8 is Q4_0's
# choice: the extreme maps to -8 exactly). 11 per sign: 20 measured the same error, twice the time.
SYMMETRIC_STEPS = np.linspace(6.5, 9.0, 11)
ASYMMETRIC_SHRINK = np.linspace(0.80, 1.0, 11)  # fraction of [min, max] the 16 levels cover
REFIT_ROUNDS = 2  # least-squares scale refits on the chosen levels (each one never raises the error)


def _weighted_error(x: np.ndarray, q: np.ndarray, zp: np.ndarray, scale: np.ndarray, w: np.ndarray) -> np.ndarray:
    d = x - (q - zp[:, None]) * scale[:, None]
    return (w * d * d).sum(axis=1)


def _levels(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, top: int) -> np.ndarray:
    safe = np.where(scale == 0, 1.0, scale)
    return np.clip(np.rint(x / safe[:, None]) + zp[:, None], 0, top)


def symmetric_search(
    x: np.ndarray, bits: int, importance: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocks `x` [blocks, block_size] on a symmetric grid: (q uint8, scale float32, zero point uint8 = 2^(bits-1)).

    `importance` [blocks, block_size] (or None: uniform) weighs each weight's squared error.
    """
    x = x.astype(np.float64)
    top, half = (1 << bits) - 1, 1 << (bits - 1)
    w = np.ones_like(x) if importance is None else importance.astype(np.float64)
    zp = np.full(x.shape[0], float(half))
    # The signed extreme: mapping it to the negative side uses the extra level (-8 .. 7 for 4 bits).
    extreme = np.take_along_axis(x, np.abs(x).argmax(axis=1)[:, None], axis=1)[:, 0]
    best_err = np.full(x.shape[0], np.inf)
    best_scale = np.zeros(x.shape[0])
    steps = SYMMETRIC_STEPS * (half / 8)
    for sign in (-1.0, 1.0):
        for t in steps:
            scale = extreme / (sign * t)
            err = _weighted_error(x, _levels(x, scale, zp, top), zp, scale, w)
            better = err < best_err
            best_err, best_scale = np.where(better, err, best_err), np.where(better, scale, best_scale)
    scale = _refit(x, best_scale, zp, w, top)
    q = _levels(x, scale, zp, top)
    return q.astype(np.uint8), scale.astype(np.float32), zp.astype(np.uint8)


def asymmetric_search(
    x: np.ndarray, bits: int, importance: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocks on an asymmetric grid (integer zero points), the range shrunk where that lowers the error."""
    x = x.astype(np.float64)
    top = (1 << bits) - 1
    w = np.ones_like(x) if importance is None else importance.astype(np.float64)
    lo, hi = np.minimum(x.min(axis=1), 0.0), np.maximum(x.max(axis=1), 0.0)
    best = (np.full(x.shape[0], np.inf), np.zeros(x.shape[0]), np.zeros(x.shape[0]))
    for f in ASYMMETRIC_SHRINK:
        scale = np.where(hi > lo, (hi - lo) * f / top, 1.0)
        zp = np.clip(np.rint(-lo * f / scale), 0, top)
        err = _weighted_error(x, _levels(x, scale, zp, top), zp, scale, w)
        better = err < best[0]
        best = (np.where(better, err, best[0]), np.where(better, scale, best[1]), np.where(better, zp, best[2]))
    _, scale, zp = best
    scale = _refit(x, scale, zp, w, top)
    return _levels(x, scale, zp, top).astype(np.uint8), scale.astype(np.float32), zp.astype(np.uint8)


def _refit(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, w: np.ndarray, top: int) -> np.ndarray:
    """Least-squares scale for the chosen levels, kept only where it lowers the weighted error."""
    for _ in range(REFIT_ROUNDS):
        q = _levels(x, scale, zp, top) - zp[:, None]
        den = (w * q * q).sum(axis=1)
        fitted = np.where(den > 0, (w * x * q).sum(axis=1) / np.where(den > 0, den, 1.0), scale)
        old = _weighted_error(x, q + zp[:, None], zp, scale, w)
        new = _weighted_error(x, _levels(x, fitted, zp, top), zp, fitted, w)
        scale = np.where(new < old, fitted, scale)
    return scale
