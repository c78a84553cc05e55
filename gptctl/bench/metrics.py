"""Measurement helpers shared by every backend: latency percentiles, decode rate, encoder throughput, memory."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import numpy as np

DECODE_RUNS_MAX = 3  # decode repetitions (each `decode_tokens` long) after the warm-up


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p90": round(float(np.percentile(a, 90)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "mean": round(float(a.mean()), 3),
        "n": int(a.size),
    }


def grid_key(batch: int, seq: int) -> str:
    return f"b{batch}_s{seq}"


def prefill_grid(
    run: Callable[[np.ndarray], Any], rng: np.random.Generator, low: int, vocab: int, spec: dict[str, Any]
) -> dict[str, Any]:
    """Prefill latency (ms) per batch x sequence cell: `warmup` untimed runs, then `iterations` timed."""
    out: dict[str, Any] = {"iterations": spec["iterations"], "warmup": spec["warmup"]}
    for batch in spec["batch_sizes"]:
        for seq in spec["prompt_lengths"]:
            ids = rng.integers(low, vocab, size=(batch, seq), dtype=np.int64)
            for _ in range(spec["warmup"]):
                run(ids)
            samples = []
            for _ in range(spec["iterations"]):
                t0 = time.perf_counter()
                run(ids)
                samples.append((time.perf_counter() - t0) * 1e3)
            out[grid_key(batch, seq)] = percentiles(samples)
    return out


def encoder_grid(
    run: Callable[[np.ndarray], Any], rng: np.random.Generator, low: int, vocab: int, spec: dict[str, Any]
) -> dict[str, Any]:
    """An encoder's latency (ms) per batch x sequence cell, as `prefill_grid`, plus its throughput there:
    sequences/s and tokens/s at the median latency (batch / p50 and batch * sequence / p50)."""
    grid = prefill_grid(run, rng, low, vocab, spec)
    for batch in spec["batch_sizes"]:
        for seq in spec["prompt_lengths"]:
            cell = grid[grid_key(batch, seq)]
            p50_s = cell["p50"] / 1e3
            cell["sequences_per_s"] = round(batch / p50_s, 3) if p50_s > 0 else None
            cell["tokens_per_s"] = round(batch * seq / p50_s, 1) if p50_s > 0 else None
    return grid


def decode_rate(
    generate: Callable[[np.ndarray, int, list], Any],
    rng: np.random.Generator,
    low: int,
    vocab: int,
    spec: dict[str, Any],
) -> dict[str, Any]:
    """Decode tokens/s with the KV cache, batch 1, prompt = first prompt length.

    The rate counts tokens after the first (the first one includes the prefill): (n - 1) / (t_n - t_1).
    """
    n = spec["decode_tokens"]
    ids = rng.integers(low, vocab, size=(1, spec["prompt_lengths"][0]), dtype=np.int64)
    if spec["warmup"]:
        generate(ids, min(n, 8), [])
    rates = []
    for _ in range(max(1, min(spec["iterations"], DECODE_RUNS_MAX))):
        stamps: list[float] = []
        generate(ids, n, stamps)
        if len(stamps) >= 2 and stamps[-1] > stamps[0]:
            rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    rate = statistics.median(rates) if rates else None
    return {
        "decode_tokens": n,
        "decode_runs": len(rates),
        "decode_prompt_length": int(ids.shape[1]),
        "decode_tokens_per_s": round(rate, 3) if rate else None,
        "decode_ms_per_token": round(1e3 / rate, 3) if rate else None,
        "decode_tokens_per_s_runs": [round(r, 3) for r in rates],
    }


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return round(kb / 1024, 1) if kb is not None else None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux), so the peak covers inference, not loading."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024, 1)


def gpu_memory_mb() -> float | None:
    """GPU memory held by this process (ORT's arena keeps its peak), from nvidia-smi."""
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(os.getpid()):
            return float(parts[1])
    return None
