"""ONNX Runtime benchmark backend: measures one execution provider on an artifact (in a worker process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gptctl.bench import metrics
from gptctl.errors import GptctlError
from gptctl.runtime.artifact import onnx_files
from gptctl.runtime.session import OrtCausalLM


class OrtBackend:
    """Benchmark one execution provider on an artifact (runs inside a bench worker process)."""

    def __init__(self, provider: str):
        self.provider = provider

    def measure(self, spec: dict[str, Any]) -> dict[str, Any]:
        artifact = Path(spec["artifact"])
        model_file = artifact / spec.get("model_file", "model.onnx")
        result: dict[str, Any] = {"provider": self.provider}
        try:
            lm, info = OrtCausalLM.from_path(model_file, self.provider, threads=spec.get("threads"))
        except GptctlError as exc:  # CheckFailed (provider not active) or BadInput (unreadable file)
            from gptctl.runtime.providers import PROVIDER_NAMES

            result.update(available=False, ort_provider=PROVIDER_NAMES[self.provider], reason=str(exc))
            return result
        result.update(info)
        result["io_binding"] = lm.io_binding
        result["size_mb"] = round(sum(p.stat().st_size for p in onnx_files(artifact)) / 1e6, 2)
        result["rss_after_load_mb"] = metrics.rss_mb()
        metrics.reset_peak_rss()
        rng = np.random.default_rng(spec.get("seed", 0))
        low, vocab = spec.get("token_low", 0), spec["vocab_size"]

        def prefill(ids: np.ndarray) -> None:
            lm.forward(ids)

        result["prefill_ms"] = metrics.prefill_grid(prefill, rng, low, vocab, spec)
        result["kv_cache"] = lm.has_cache  # without one, each token recomputes the whole sequence
        result.update(metrics.decode_rate(lambda ids, n, timings: lm.greedy(ids, n, timings=timings), rng, low, vocab, spec))
        result["peak_rss_mb"] = metrics.peak_rss_mb()
        if lm.device == "cuda":
            result["gpu_mem_mb"] = metrics.gpu_memory_mb()
        return result
