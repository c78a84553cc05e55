"""Run every requested backend on an artifact, each in its own worker process, and compare them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from gptctl.progress import NULL_PROGRESS, Progress
from gptctl.runtime.encoder import graph_task
from gptctl.runtime.providers import check_required, resolve_providers

WORKER_TIMEOUT_S = 3600


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one backend in a fresh interpreter; return its result (errors become available: false)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gptctl.bench.worker"],
            input=json.dumps(spec),
            text=True,
            capture_output=True,
            env=env,
            timeout=WORKER_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {"available": False, "reason": f"benchmark worker timed out after {WORKER_TIMEOUT_S} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("GPTCTL-RESULT "):
            return json.loads(line[len("GPTCTL-RESULT ") :])
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    return {"available": False, "reason": f"benchmark worker exited with code {proc.returncode}: {tail}"[:800]}


def run_benchmark(
    artifact: Path,
    settings: Any,
    *,
    source_spec: str | None,
    vocab_size: int,
    baseline: bool = True,
    progress: Progress = NULL_PROGRESS,
    task: str | None = None,
) -> dict[str, Any]:
    """The `benchmark` object: one entry per provider (plus `pytorch`), with ratios vs PyTorch.

    `task` is the export task (the manifest's options.task; `export --benchmark` passes its options, which
    carry it): an encoder (feature-extraction) is measured as latency and sequences/s per batch x length,
    a decoder as prefill latency and decode tokens/s. Without one, the graph's inputs and outputs decide.

    Raises:
        CheckFailed: a provider in `settings.require_provider` is not active.
    """
    order, probes = resolve_providers(settings.provider, settings.require_provider)
    check_required(probes, settings.require_provider)
    task = task or getattr(settings, "task", None) or graph_task(Path(artifact) / "model.onnx")
    common = {
        "artifact": str(artifact),
        "threads": settings.threads,
        "prompt_lengths": list(settings.prompt_lengths),
        "batch_sizes": list(settings.batch_sizes),
        "iterations": settings.iterations,
        "warmup": settings.warmup,
        "decode_tokens": settings.decode_tokens,
        "vocab_size": int(vocab_size),
        "seed": 0,
        "trust_remote_code": settings.trust_remote_code,
        "task": task,
    }
    bench: dict[str, Any] = {}
    for name in order:
        probe = probes[name]
        if not probe["available"]:
            bench[name] = {k: probe[k] for k in ("provider", "ort_provider", "available", "reason", "active_providers")}
            continue
        progress.info(f"benchmarking onnxruntime {name}")
        result = run_worker({**common, "backend": name})
        result.setdefault("provider", name)
        bench[name] = result
    if baseline:
        if source_spec:
            progress.info("benchmarking the PyTorch eager baseline")
            pt = run_worker({**common, "backend": "pytorch", "source": source_spec})
            pt.setdefault("provider", "pytorch")
        else:
            pt = {
                "provider": "pytorch",
                "available": False,
                "reason": "the artifact's manifest does not name a loadable input model",
            }
        bench["pytorch"] = pt
        add_ratios(bench)
    check_required(bench, settings.require_provider)
    return bench


def add_ratios(bench: dict[str, Any]) -> None:
    """Speed-ups vs the PyTorch baseline of the same run (>1 = faster than PyTorch)."""
    pt = bench.get("pytorch") or {}
    if not pt.get("available"):
        return
    for name, entry in bench.items():
        if name == "pytorch" or not entry.get("available"):
            continue
        if entry.get("decode_tokens_per_s") and pt.get("decode_tokens_per_s"):
            entry["decode_speedup_vs_pytorch"] = round(entry["decode_tokens_per_s"] / pt["decode_tokens_per_s"], 3)
        for grid in ("prefill", "encoder"):
            cells = _cell_speedups(entry.get(f"{grid}_ms"), pt.get(f"{grid}_ms"))
            if cells:
                entry[f"{grid}_speedup_vs_pytorch"] = cells
        if entry.get("size_mb") and pt.get("size_mb"):
            entry["size_ratio_vs_pytorch"] = round(entry["size_mb"] / pt["size_mb"], 3)
        if entry.get("peak_rss_mb") and pt.get("peak_rss_mb"):
            entry["peak_rss_ratio_vs_pytorch"] = round(entry["peak_rss_mb"] / pt["peak_rss_mb"], 3)


def _cell_speedups(grid: dict[str, Any] | None, ref: dict[str, Any] | None) -> dict[str, float]:
    """PyTorch's p50 latency over this backend's, per batch x length cell (= the ratio of sequences/s)."""
    cells = {}
    for key, cell in (grid or {}).items():
        other = (ref or {}).get(key)
        if isinstance(cell, dict) and isinstance(other, dict) and cell.get("p50"):
            cells[key] = round(other["p50"] / cell["p50"], 3)
    return cells
