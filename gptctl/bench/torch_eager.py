"""PyTorch eager baseline, on CPU: the artifact's own input model.

A decoder runs `generate` with the KV cache; an encoder (`task: feature-extraction`) runs one forward
pass per batch x length cell, fed as the ONNX side is (`gptctl.runtime.encoder.encoder_feeds`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gptctl.bench import metrics
from gptctl.runtime.encoder import KNOWN_INPUTS, encoder_feeds, is_encoder_task


class TorchEagerBackend:
    provider = "pytorch"

    def measure(self, spec: dict[str, Any]) -> dict[str, Any]:
        import torch

        from gptctl.model_source import load_causal_lm, resolve_model

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        encoder = is_encoder_task(spec.get("task"))
        result: dict[str, Any] = {
            "provider": "pytorch",
            "kind": "encoder" if encoder else "decoder",
            "available": True,
            "reason": None,
            "torch_version": torch.__version__,
            "device": "cpu",
            "threads": torch.get_num_threads(),
        }
        t0 = time.perf_counter()
        source = resolve_model(spec["source"], trust_remote_code=spec.get("trust_remote_code", False))
        model = _load_encoder(source) if encoder else load_causal_lm(source, merge_adapter=True)
        result["session_s"] = round(time.perf_counter() - t0, 4)  # model load, for comparison
        params = list(model.parameters())
        result["size_mb"] = round(sum(p.numel() * p.element_size() for p in params) / 1e6, 2)
        result["rss_after_load_mb"] = metrics.rss_mb()
        metrics.reset_peak_rss()
        rng = np.random.default_rng(spec.get("seed", 0))
        if encoder:
            _measure_encoder(model, rng, spec, result)
        else:
            _measure_decoder(model, rng, spec, result)
        result["peak_rss_mb"] = metrics.peak_rss_mb()
        return result


def _load_encoder(source: Any) -> Any:
    """The encoder itself (AutoModel: BertModel for a BERT), as `gptctl export --task feature-extraction` loads it."""
    from transformers import AutoModel

    base = source.base if source.is_adapter else source
    kwargs = {"gguf_file": base.gguf_file} if base.kind == "gguf" else {}
    return AutoModel.from_pretrained(base.path, trust_remote_code=source.trust_remote_code, **kwargs).eval()


def _measure_encoder(model: Any, rng: np.random.Generator, spec: dict[str, Any], result: dict[str, Any]) -> None:
    import inspect

    import torch

    # The inputs the model's forward takes, as the exported graph declares them; position ids are left to
    # the model's own buffer (the same values, 0..seq-1).
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in KNOWN_INPUTS if n in accepted and n != "position_ids"]
    result["inputs_fed"] = names

    def forward(ids: np.ndarray) -> None:
        feeds = {k: torch.from_numpy(v) for k, v in encoder_feeds(names, ids).items()}
        with torch.inference_mode():
            model(**feeds)

    result["encoder_ms"] = metrics.encoder_grid(forward, rng, spec.get("token_low", 0), spec["vocab_size"], spec)


def _measure_decoder(model: Any, rng: np.random.Generator, spec: dict[str, Any], result: dict[str, Any]) -> None:
    import torch

    low, vocab = spec.get("token_low", 0), spec["vocab_size"]

    def prefill(ids: np.ndarray) -> None:
        with torch.inference_mode():
            model(input_ids=torch.from_numpy(ids), use_cache=True)

    result["prefill_ms"] = metrics.prefill_grid(prefill, rng, low, vocab, spec)
    result.update(metrics.decode_rate(lambda ids, n, stamps: _generate(model, ids, n, stamps), rng, low, vocab, spec))


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
        return model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            pad_token_id=0,
            stopping_criteria=StoppingCriteriaList([_Stamp()]),
        )
