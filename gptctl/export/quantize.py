"""Weight-only quantization (ONNX Runtime MatMulNBits), and perplexity to show what it cost.

Every MatMul with a constant weight becomes MatMulNBits (int4 or int8, `block_size` weights per scale;
see `nbits` for the grids), the LM head included: the exporter leaves it untied from the embedding for
this. With int4 the embedding table becomes GatherBlockQuantized, so no fp32 vocabulary matrix remains.
int8 uses MatMulNBits too: plain `quantize_dynamic` (MatMulInteger) measured slower than fp32 for decode.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from gptctl.errors import BadInput

# accuracy_level 4: activations are quantized to int8 per block inside MatMulNBits on CPU, which is what
# makes int4/int8 decode fast there; GPU kernels ignore it.
ACCURACY_LEVEL = 4
PPL_MAX_LENGTH = 512  # longest evaluation sequence, as `gptctl optimize --max-length` defaults to


def quantize_weights(proto: Any, *, bits: int, block_size: int, quantize_embedding: bool = True,
                     head_bits: int = 8) -> tuple[Any, dict[str, Any]]:
    """Quantize every MatMul weight to `bits` (the LM head to `head_bits`, symmetric, 8 by default),
    and with int4 the embedding table too (GatherBlockQuantized); return (graph, report)."""
    from gptctl.export.nbits import replace_matmuls

    lm_head = _lm_head_weight(proto)
    matmuls = sum(1 for n in proto.graph.node if n.op_type == "MatMul")
    # The LM head gets 8 bits even in int4 mode unless asked: at 4 bits it alone cost SmolLM2-135M
    # +7% perplexity, at 8 bits nothing measurable, for 28 MB instead of 14 MB (vs 113 MB in fp32).
    head = {lm_head: max(bits, head_bits)} if lm_head else {}
    report = replace_matmuls(proto, bits=bits, block_size=block_size, accuracy_level=ACCURACY_LEVEL, bits_for=head,
                             symmetric_for=set(head))
    if bits == 4 and quantize_embedding:
        proto = _quantize_gather(proto, block_size)
    embedding = any(n.op_type == "GatherBlockQuantized" for n in proto.graph.node)
    return proto, {
        "bits": bits, "block_size": block_size, "accuracy_level": ACCURACY_LEVEL, "op": "MatMulNBits",
        "matmuls_quantized": report["matmuls_quantized"], "matmuls_total": matmuls,
        "exact_grid_weights": report["exact_grid"], "rtn_weights": report["rtn"],
        "lm_head_quantized": bool(lm_head and lm_head in report["weights"]),
        "lm_head_bits": report["weights"].get(lm_head) if lm_head else None,
        "embedding_quantized": embedding,
    }


def _quantize_gather(proto: Any, block_size: int) -> Any:
    """int4 embedding table via ONNX Runtime's quantizer (GatherBlockQuantized, 4 bits only)."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    # It warns that it raises the opset/IR version for int4 types: expected.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    ops = ("Gather",)
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=False, accuracy_level=ACCURACY_LEVEL, bits=4,
                                          op_types_to_quantize=ops, quant_axes=(("Gather", 1),))
    quantizer = MatMulNBitsQuantizer(proto, bits=4, block_size=block_size, is_symmetric=False,
                                     accuracy_level=ACCURACY_LEVEL, algo_config=config, op_types_to_quantize=ops)
    quantizer.process()
    return quantizer.model.model


def _lm_head_weight(proto: Any) -> str | None:
    """The initializer of the MatMul that produces `logits` (None when the head is not a plain MatMul)."""
    inits = {t.name for t in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    node = producers.get("logits")
    seen = 0
    while node is not None and seen < 4:  # logits may come after a Cast/Identity
        if node.op_type == "MatMul":
            return node.input[1] if node.input[1] in inits else None
        node = producers.get(node.input[0])
        seen += 1
    return None


def load_eval_records(spec: str) -> list:
    """Evaluation data, read exactly as `gptctl optimize --eval-data` reads it (.txt: samples separated
    by blank lines; .jsonl: text, prompt/completion or chat records), from a path or pkg:PACKAGE/FILE."""
    from gptctl.model_source import package_data_file
    from gptctl.optimize.data import read_records

    path = package_data_file(spec) if spec.startswith("pkg:") else Path(spec).expanduser()
    return read_records(path, flag="--eval-data")


def eval_samples(tokenizer: Any, records: list, *, vocab_size: int, path: str, max_length: int = PPL_MAX_LENGTH) -> list:
    """Tokenised evaluation sequences, as `gptctl optimize` builds them (same special tokens, same
    labelled positions, samples longer than `max_length` cut into consecutive windows)."""
    from gptctl.optimize.data import tokenize

    samples = tokenize(records, tokenizer, max_length=max_length, packing=False, path=path, for_eval=True).samples
    bad = [s.line for s in samples if max(s.input_ids) >= vocab_size]
    if bad:
        raise BadInput(f"{path}:{bad[0]}: the tokenizer produces ids beyond the model's vocabulary ({vocab_size})",
                       "the tokenizer and the model do not match")
    return samples


def perplexity_onnx(lm: Any, samples: list) -> dict[str, Any]:
    """Token-weighted perplexity of an exported decoder (an open `OrtCausalLM`) over `samples`, each
    scored from its start with an empty cache: the definition `gptctl optimize` uses, so the figures
    of the two steps compare (on the same data, fp32 ONNX reproduces the PyTorch figure)."""
    from gptctl.optimize.data import IGNORE

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
    return {"ppl": round(math.exp(min(nll / count, 700.0)), 4), "tokens": count, "sequences": len(samples)}
