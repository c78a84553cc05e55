"""Perplexity: one definition for every step (token-weighted over held-out samples).

`gptctl optimize` scores PyTorch models with it (`gptctl.optimize.evaluate`), `gptctl export` scores the
ONNX graphs (`perplexity_onnx`), so the figures of the two steps compare: on the same file, the fp32
ONNX graph reproduces the PyTorch figure (tests/test_export_quantize.py checks to 1e-4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gptctl.errors import BadInput
from gptctl.evaluation.records import IGNORE, Sample

MAX_MEAN_NLL = 700.0  # exp(710) overflows a float64; a model this bad reports ~1e304, not an error


def perplexity_from_nll(mean_nll: float) -> float:
    """exp(mean negative log-likelihood per labelled token), the perplexity every step reports."""
    return math.exp(min(mean_nll, MAX_MEAN_NLL))


def perplexity_onnx(lm: Any, samples: Sequence[Sample]) -> dict[str, Any]:
    """Token-weighted perplexity of an exported decoder (an open `OrtCausalLM`) over `samples`, each
    scored from its start with an empty cache, as `gptctl optimize` scores them.

    Returns {"ppl" (rounded to 4 decimals), "tokens" (labelled positions scored), "sequences"}.
    """
    import numpy as np

    nll, count = 0.0, 0
    for s in samples:
        ids = np.asarray(s.input_ids, dtype=np.int64)
        targets = np.asarray(s.labels[1:], dtype=np.int64)
        keep = targets != IGNORE
        if not keep.any():
            continue
        out, _ = lm.forward(ids[None, :])
        logits = np.asarray(out["logits"][0, :-1], dtype=np.float64)[keep]
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll -= float(logp[np.arange(len(logp)), targets[keep]].sum())
        count += int(keep.sum())
    if count == 0:
        raise BadInput("the evaluation data has no token to score", "pass a few sentences of text")
    return {"ppl": round(perplexity_from_nll(nll / count), 4), "tokens": count, "sequences": len(samples)}
