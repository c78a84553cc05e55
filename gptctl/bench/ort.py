"""ONNX Runtime benchmark backend: measures one execution provider on an artifact (in a worker process).

A decoder is measured as prefill latency per batch x length and decode tokens/s with the KV cache; an
encoder (`task: feature-extraction` in the artifact's manifest) as latency and sequences/s per batch x
length, every input its graph declares fed (`gptctl.runtime.encoder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gptctl.bench import metrics
from gptctl.errors import GptctlError
from gptctl.runtime.artifact import onnx_files
from gptctl.runtime.encoder import OrtEncoder, is_encoder_task
from gptctl.runtime.session import OrtCausalLM


class OrtBackend:
    """Benchmark one execution provider on an artifact (runs inside a bench worker process)."""

    def __init__(self, provider: str):
        self.provider = provider

    def measure(self, spec: dict[str, Any]) -> dict[str, Any]:
        artifact = Path(spec["artifact"])
        model_file = artifact / spec.get("model_file", "model.onnx")
        encoder = is_encoder_task(spec.get("task"))
        result: dict[str, Any] = {"provider": self.provider, "kind": "encoder" if encoder else "decoder"}
        try:
            opened = OrtEncoder if encoder else OrtCausalLM
            model, info = opened.from_path(model_file, self.provider, threads=spec.get("threads"))
        except GptctlError as exc:  # CheckFailed (provider not active) or BadInput (unreadable file)
            from gptctl.runtime.providers import PROVIDER_NAMES

            result.update(available=False, ort_provider=PROVIDER_NAMES[self.provider], reason=str(exc))
            return result
        result.update(info)
        result["size_mb"] = round(sum(p.stat().st_size for p in onnx_files(artifact)) / 1e6, 2)
        result["rss_after_load_mb"] = metrics.rss_mb()
        metrics.reset_peak_rss()
        rng = np.random.default_rng(spec.get("seed", 0))
        if encoder:
            _measure_encoder(model, rng, spec, result)
        else:
            _measure_decoder(model, rng, spec, result)
        result["peak_rss_mb"] = metrics.peak_rss_mb()
        if model.device == "cuda":
            result["gpu_mem_mb"] = metrics.gpu_memory_mb()
        return result


def _measure_decoder(lm: OrtCausalLM, rng: np.random.Generator, spec: dict[str, Any], result: dict[str, Any]) -> None:
    low, vocab = spec.get("token_low", 0), spec["vocab_size"]
    result["io_binding"] = lm.io_binding

    def prefill(ids: np.ndarray) -> None:
        lm.forward(ids)

    result["prefill_ms"] = metrics.prefill_grid(prefill, rng, low, vocab, spec)
    result["kv_cache"] = lm.has_cache  # without one, each token recomputes the whole sequence
    result.update(
        metrics.decode_rate(lambda ids, n, timings: lm.greedy(ids, n, timings=timings), rng, low, vocab, spec)
    )


def _measure_encoder(
    encoder: OrtEncoder, rng: np.random.Generator, spec: dict[str, Any], result: dict[str, Any]
) -> None:
    result["inputs_fed"] = list(encoder.input_names)  # every input the graph declares
    result["encoder_ms"] = metrics.encoder_grid(
        encoder.forward, rng, spec.get("token_low", 0), spec["vocab_size"], spec
    )
