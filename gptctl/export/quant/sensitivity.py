"""Mixed precision by measurement: each MatMul weight's sensitivity, and the 8-bit set it buys within a budget.

Sensitivity is how far the model's next-token distribution moves when that weight alone is quantized to 4 bits
(mean KL(fp32 || quantized) per token on calibration text), measured through ONNX Runtime on the graph being
quantized. One session serves every measurement: the candidate weights become graph inputs, and each run feeds
the fp32 weights but one, which gets its dequantized 4-bit version, so no graph is rebuilt per weight.

The 8-bit set is then chosen greedily by measured KL saved per extra byte (an 8-bit weight costs K*N/2 bytes
more than a 4-bit one) until `int8_share` of the candidates' parameters is spent. That ranking stands in for a
search over sets because small KLs add up to first order; the manifest's `sensitivity` section records each
weight's KL, their sum and what is left at 4 bits, so the assumption can be checked against the export's own
perplexity and KL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Calibration tokens each single-weight run reads: one forward pass per weight (121 on SmolLM2-135M), so the
# measurement's time is linear in this; 512 is about half of the bundled pharmacy notes.
SENSITIVITY_TOKENS = 512


@dataclass(frozen=True)
class Sensitivity:
    """Per weight name: the mean KL per token with that weight alone at 4 bits; `tokens` measured on."""

    kl: dict[str, float]
    tokens: int


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _windows(samples: Sequence[Any], max_tokens: int) -> list[np.ndarray]:
    """Token id rows (each a sample, the last cut) adding up to at most `max_tokens`."""
    rows, left = [], max_tokens
    for s in samples:
        ids = list(s.input_ids)[:left]
        if len(ids) >= 2:
            rows.append(np.asarray([ids], dtype=np.int64))
            left -= len(ids)
        if left < 2:
            break
    return rows


def measure_sensitivity(
    proto: Any,
    trial: Mapping[str, Callable[[], np.ndarray]],
    samples: Sequence[Any],
    *,
    max_tokens: int = SENSITIVITY_TOKENS,
) -> Sensitivity:
    """KL per token when each weight of `trial` (name -> a function returning its dequantized low-bit [K, N])
    alone replaces the fp32 initializer of that name in `proto` (left as it was)."""
    import onnxruntime as ort
    from onnx import helper

    from gptctl.runtime.session import OrtCausalLM

    rows = _windows(samples, max_tokens)
    if not rows:
        raise ValueError("no calibration tokens to measure sensitivity on")
    graph = proto.graph
    moved = [t for t in graph.initializer if t.name in trial]
    fp32 = {t.name: _array(t) for t in moved}
    kept = [t for t in graph.initializer if t.name not in trial]
    before = len(graph.input)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.extend([helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in moved])
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    finally:
        del graph.input[before:]
        del graph.initializer[:]
        graph.initializer.extend(kept + moved)
    lm = OrtCausalLM(session)

    def logp(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [_log_softmax(lm.forward(r, **feeds)[0]["logits"][0]) for r in rows]

    ref = logp(fp32)
    tokens = sum(len(r) for r in ref)
    kl = {}
    for name, dequantized in trial.items():
        got = logp({**fp32, name: np.ascontiguousarray(dequantized(), dtype=np.float32)})
        total = sum(float((np.exp(a) * (a - b)).sum()) for a, b in zip(ref, got, strict=True))
        kl[name] = float(f"{max(total / tokens, 0.0):.4g}")
    return Sensitivity(kl=kl, tokens=tokens)


def _array(t: Any) -> np.ndarray:
    from onnx import numpy_helper

    return np.ascontiguousarray(numpy_helper.to_array(t), dtype=np.float32)


def choose_8bit(kl: dict[str, float], params: dict[str, int], share: float) -> list[str]:
    """The weights to keep at 8 bits: most KL saved per parameter first, while their parameters stay within
    `share` of all candidates' (weights that fit are still taken after a larger one did not)."""
    budget = share * sum(params.values())
    chosen, spent = [], 0
    for name in sorted(kl, key=lambda w: kl[w] / max(params[w], 1), reverse=True):
        if kl[name] <= 0:
            break
        if spent + params[name] <= budget:
            chosen.append(name)
            spent += params[name]
    return chosen


def trial_grids(proto: Any, plan: Mapping[str, Any], stats: Any, block_size: int) -> tuple[dict, dict]:
    """Each planned weight's grid (`rewrite.WeightPlan`), computed once: (name -> a Grid returning it, for
    `apply_plan`; name -> a function returning the dequantized weight, for `measure_sensitivity`). Weights already
    on a 4-bit grid are left out: `apply_plan` repacks them exactly, so at 4 bits they cost nothing."""
    from onnx import numpy_helper

    from gptctl.export.quant.grid import grid_blocks
    from gptctl.export.quant.rewrite import _stats_for, block_rows, dequantize_parts

    inits = {t.name: t for t in proto.graph.initializer}
    grids, dequantized = {}, {}
    for name, choice in plan.items():
        w = numpy_helper.to_array(inits[name])
        if choice.bits == 4 and w.shape[0] % block_size == 0 and grid_blocks(block_rows(w, block_size)[0]) is not None:
            continue
        parts = choice.grid(w, choice.bits, block_size, _stats_for(stats, name))
        grids[name] = lambda *_, parts=parts: parts
        dequantized[name] = lambda parts=parts, k=w.shape[0]: dequantize_parts(*parts, k)
    return grids, dequantized
