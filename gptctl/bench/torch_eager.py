"""PyTorch eager baseline: the artifact's own input model, `generate` with the KV cache, on CPU."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gptctl.bench import metrics


class TorchEagerBackend:
    provider = "pytorch"

    def measure(self, spec: dict[str, Any]) -> dict[str, Any]:
        import torch

        from gptctl.model_source import load_causal_lm, resolve_model

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        result: dict[str, Any] = {"provider": "pytorch", "available": True, "reason": None,
                                  "torch_version": torch.__version__, "device": "cpu", "threads": torch.get_num_threads()}
        t0 = time.perf_counter()
        source = resolve_model(spec["source"], trust_remote_code=spec.get("trust_remote_code", False))
        model = load_causal_lm(source, merge_adapter=True)
        result["session_s"] = round(time.perf_counter() - t0, 4)  # model load, for comparison
        params = list(model.parameters())
        result["size_mb"] = round(sum(p.numel() * p.element_size() for p in params) / 1e6, 2)
        result["rss_after_load_mb"] = metrics.rss_mb()
        metrics.reset_peak_rss()
        rng = np.random.default_rng(spec.get("seed", 0))
        low, vocab = spec.get("token_low", 0), spec["vocab_size"]

        def prefill(ids: np.ndarray) -> None:
            with torch.inference_mode():
                model(input_ids=torch.from_numpy(ids), use_cache=True)

        result["prefill_ms"] = metrics.prefill_grid(prefill, rng, low, vocab, spec)
        result.update(metrics.decode_rate(lambda ids, n, stamps: _generate(model, ids, n, stamps), rng, low, vocab, spec))
        result["peak_rss_mb"] = metrics.peak_rss_mb()
        return result


def _generate(model: Any, ids: np.ndarray, n: int, stamps: list[float]) -> Any:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stamp(StoppingCriteria):
        # Called once per generated token: records when each token was ready.
        def __call__(self, input_ids, scores, **kwargs):
            stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    x = torch.from_numpy(ids)
    with torch.inference_mode():
        return model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, num_beams=1, use_cache=True, pad_token_id=0,
                              stopping_criteria=StoppingCriteriaList([_Stamp()]))
