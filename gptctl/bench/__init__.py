"""Benchmarks of an exported artifact: ONNX Runtime per execution provider vs PyTorch eager.

Light on import: `bench_artifact` imports the heavy modules when called.
"""

from __future__ import annotations

from typing import Any

from gptctl.bench.options import BenchOptions

__all__ = ["BenchOptions", "bench_artifact", "run_benchmark"]


def bench_artifact(options: BenchOptions | dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """Benchmark an existing `gptctl export` directory; return its manifest with a fresh `benchmark`."""
    from gptctl.bench.artifact import bench_artifact as _run

    return _run(options, progress)


def run_benchmark(artifact: Any, settings: Any, **kwargs: Any) -> dict[str, Any]:
    """Benchmark a (possibly still unfinished) export directory: see `gptctl.bench.runner.run_benchmark`."""
    from gptctl.bench.runner import run_benchmark as _run

    return _run(artifact, settings, **kwargs)
