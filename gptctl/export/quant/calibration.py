"""Activation statistics of every quantizable MatMul, measured on the fp32 ONNX graph with calibration text.

Each MatMul input becomes an extra graph output for the duration of the measurement (inputs shared by
several MatMuls, like q/k/v's, are measured once). Per weight it returns the mean squared activation of
each input channel (the importance the block search weighs errors by, llama.cpp's imatrix) and, when
asked, the full X^T X / tokens that GPTQ needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CALIBRATION_TOKENS = 4096  # enough for stable channel means on a 135M model; the notes have ~1k


@dataclass
class ActivationStats:
    """Per MatMul weight name: mean x^2 per input channel [K]; `hessian`: mean x x^T [K, K] (GPTQ)."""

    importance: dict[str, np.ndarray] = field(default_factory=dict)
    hessian: dict[str, np.ndarray] = field(default_factory=dict)
    tokens: int = 0
    sequences: int = 0


def matmul_inputs(proto: Any, min_k: int = 1) -> dict[str, str]:
    """Weight initializer name -> the activation it multiplies, for MatMuls with a 2-D float constant B."""
    inits = {t.name: t for t in proto.graph.initializer}
    found = {}
    for node in proto.graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        t = inits.get(node.input[1])
        if t is not None and len(t.dims) == 2 and t.data_type == 1 and t.dims[0] >= min_k:
            found[node.input[1]] = node.input[0]
    return found


def collect_stats(
    proto: Any, samples: Sequence[Any], *, hessian: bool = False, max_tokens: int = CALIBRATION_TOKENS
) -> ActivationStats:
    """Run `samples` (gptctl.evaluation Samples) through the fp32 graph `proto` (left as it was) and
    measure the inputs of its MatMuls."""
    import onnxruntime as ort
    from onnx import helper

    from gptctl.runtime.session import OrtCausalLM

    inputs = matmul_inputs(proto)
    acts = sorted(set(inputs.values()))
    graph = proto.graph
    before = len(graph.output)
    graph.output.extend([helper.make_value_info(a, helper.TypeProto()) for a in acts])
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    finally:
        del graph.output[before:]
    lm = OrtCausalLM(session)
    sums: dict[str, np.ndarray] = {}
    grams: dict[str, np.ndarray] = {}
    stats = ActivationStats()
    for s in samples:
        if stats.tokens >= max_tokens:
            break
        out, _ = lm.forward(np.asarray([s.input_ids], dtype=np.int64))
        for a in acts:
            x = np.asarray(out[a], dtype=np.float64).reshape(-1, np.asarray(out[a]).shape[-1])
            sums[a] = sums.get(a, 0.0) + (x * x).sum(axis=0)
            if hessian:
                grams[a] = grams.get(a, 0.0) + x.T @ x
        stats.tokens += len(s.input_ids)
        stats.sequences += 1
    if not stats.tokens:
        raise ValueError("no calibration tokens")
    for weight, a in inputs.items():
        stats.importance[weight] = sums[a] / stats.tokens
        if hessian:
            stats.hessian[weight] = grams[a] / stats.tokens
    return stats


SELF_TOKENS = 96  # greedy tokens generated per prompt when no calibration text is given


def self_generated_samples(lm: Any, tokenizer: Any, vocab_size: int, tokens: int = SELF_TOKENS) -> list:
    """Calibration text without data: the fp32 graph (an open OrtCausalLM) continues each validation sentence
    greedily; the prompt and its continuation are one sample."""
    from gptctl.evaluation.records import Sample
    from gptctl.export.validate import fixed_inputs

    samples = []
    for row in fixed_inputs(tokenizer, vocab_size):
        new = lm.greedy(row[None, :], tokens)[0]
        ids = [int(i) for i in row] + [int(i) for i in new]
        samples.append(Sample(input_ids=ids, labels=list(ids), line=0))
    return samples
