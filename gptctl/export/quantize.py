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
PPL_WINDOW = 256  # tokens per perplexity window (non-overlapping)
PPL_MAX_TOKENS = 4096


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


def load_eval_text(spec: str) -> str:
    """Evaluation text from a .txt file, a .jsonl file (field "text") or pkg:PACKAGE/FILE."""
    from gptctl.model_source import package_data_file

    path = package_data_file(spec) if spec.startswith("pkg:") else Path(spec).expanduser()
    if not path.is_file():
        raise BadInput(f"--eval-data {spec}: no such file", "pass a .txt file or a .jsonl file with a 'text' field")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--eval-data {spec}: cannot read: {exc}") from exc
    if path.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInput(f"{path}:{i}: not valid JSON: {exc}") from exc
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise BadInput(f"{path}:{i}: no string field 'text'", "each line must be an object with a 'text' field")
            texts.append(row["text"])
        raw = "\n\n".join(texts)
    if not raw.strip():
        raise BadInput(f"--eval-data {spec} is empty", "pass some text to measure perplexity on")
    return raw


def eval_token_ids(tokenizer: Any, text: str, *, vocab_size: int, max_tokens: int = PPL_MAX_TOKENS) -> np.ndarray:
    ids = [i for i in tokenizer(text, add_special_tokens=False)["input_ids"] if 0 <= i < vocab_size][:max_tokens]
    if len(ids) < 8:
        raise BadInput(f"evaluation text has only {len(ids)} tokens", "pass at least a few sentences")
    return np.asarray(ids, dtype=np.int64)


def perplexity_onnx(lm: Any, ids: np.ndarray, *, window: int = PPL_WINDOW) -> dict[str, Any]:
    """Perplexity of an exported decoder (an open `OrtCausalLM`) over non-overlapping windows,
    each from an empty cache."""
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window]
        if len(chunk) < 2:
            break
        out, _ = lm.forward(chunk[None, :])
        logits = np.asarray(out["logits"][0, :-1], dtype=np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll -= float(logp[np.arange(len(chunk) - 1), chunk[1:]].sum())
        count += len(chunk) - 1
    return {"ppl": round(math.exp(nll / count), 4), "tokens": count, "window": window}
