"""README.md for every export artifact: what it is, how it was checked, how to load it.

Written from the manifest after it is saved (so it never contradicts `gptctl.json`), and not listed
among the manifest's hashed outputs: those are the graph files. Nothing in it depends on timing, so
the same export writes the same card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CARD_NAME = "README.md"


def write_model_card(directory: str | Path, manifest: dict[str, Any]) -> Path:
    """Write `README.md` into the artifact `directory` from its `manifest`; return the path."""
    path = Path(directory) / CARD_NAME
    path.write_text(model_card(manifest))
    return path


def model_card(manifest: dict[str, Any]) -> str:
    """The card's Markdown text."""
    opts = manifest.get("options", {})
    quant = manifest.get("quantization")
    sections = [_what(manifest, opts, quant), _validation(manifest), _loading(opts, quant)]
    if quant:
        sections.append(_contrib_ops(quant))
    sections.append("Full record (options, input hashes, library versions, metrics): `gptctl.json`.\n")
    return "\n".join(sections)


def _precision(opts: dict[str, Any], quant: dict[str, Any] | None) -> str:
    if not quant:
        return f"{opts.get('dtype', 'fp32')} weights and activations"
    head = f"LM head int{quant['lm_head_bits']}" if quant.get("lm_head_quantized") else "LM head not quantized"
    emb = "; embedding int4 (GatherBlockQuantized)" if quant.get("embedding_quantized") else ""
    return (
        f"weight-only {quant.get('method', 'int' + str(quant['bits']))}: int{quant['bits']} MatMulNBits, "
        f"block {quant['block_size']}, {head}{emb}; fp32 activations"
    )


def _what(manifest: dict[str, Any], opts: dict[str, Any], quant: dict[str, Any] | None) -> str:
    model = manifest.get("inputs", {}).get("model", {})
    lines = [
        f"# ONNX export of {model.get('spec', opts.get('model', '?'))}",
        "",
        f"Exported by gptctl {manifest.get('gptctl_version', '')} (`gptctl export`).",
        "",
        f"- input model: `{model.get('spec', '?')}` ({model.get('kind', '?')})",
        f"- task: {opts.get('task', '?')}",
        f"- precision: {_precision(opts, quant)}",
        f"- graph: {', '.join(manifest.get('outputs', {})) or '-'}",
    ]
    if manifest.get("metrics", {}).get("layout") == "fast":
        lines.append(
            "- graph layout: fast (ONNX Runtime contrib ops GroupQueryAttention, RotaryEmbedding, "
            "SkipSimplifiedLayerNormalization, domain `com.microsoft`; `--layout optimum` for optimum's graph)"
        )
    if opts.get("optimize"):
        applied = (manifest.get("optimization") or {}).get("applied")
        lines.append(f"- ONNX Runtime transformer fusions: {'applied' if applied else 'not available for this model'}")
    return "\n".join(lines) + "\n"


def _validation(manifest: dict[str, Any]) -> str:
    v = manifest.get("validation") or {}
    m = manifest.get("metrics", {})
    lines = [
        "## Validation",
        "",
        f"ONNX Runtime against PyTorch on the {v.get('checked_graph', 'model.onnx')}: max |diff| "
        f"{_num(v.get('max_abs_diff'))} (atol {_num(v.get('atol'))}), "
        f"{'passed' if v.get('passed') else 'FAILED'}.",
    ]
    if v.get("greedy_match") is not None:
        lines.append(
            f"Greedy generation, {v.get('greedy_tokens')} tokens: "
            f"{'identical to PyTorch' if v['greedy_match'] else 'differs from PyTorch'}."
        )
    c = v.get("converted_vs_fp32")
    if c:
        lines.append(
            f"Shipped graph vs the fp32 graph: top-1 agreement {_num(c.get('top1_agreement'))}, greedy "
            f"agreement {_num(c.get('greedy_agreement'))}, "
            f"logits max |diff| {_num(c.get('logits_max_abs_diff'))}."
        )
    if "ppl_fp32" in m:
        ppl = f"Perplexity on --eval-data ({m.get('eval_tokens')} tokens): fp32 {_num(m['ppl_fp32'])}"
        if "ppl_quantized" in m:
            ppl += f", quantized {_num(m['ppl_quantized'])} (ratio {_num(m.get('ppl_ratio'))})"
        lines.append(ppl + ".")
    return "\n\n".join(lines[:2]) + "\n" + "\n".join(f"- {x}" for x in lines[2:]) + "\n"


def _loading(opts: dict[str, Any], quant: dict[str, Any] | None) -> str:
    encoder = opts.get("task") == "feature-extraction"
    cls = "ORTModelForFeatureExtraction" if encoder else "ORTModelForCausalLM"
    optimum = [
        f"from optimum.onnxruntime import {cls}",
        "from transformers import AutoTokenizer",
        "",
        'tok = AutoTokenizer.from_pretrained("PATH")',
        f'model = {cls}.from_pretrained("PATH")',
    ]
    if not encoder:
        optimum += [
            'ids = tok("Hello", return_tensors="pt")',
            "print(tok.decode(model.generate(**ids, max_new_tokens=20)[0]))",
        ]
    plain = [
        "import onnxruntime as ort",
        "",
        'session = ort.InferenceSession("PATH/model.onnx", providers=["CPUExecutionProvider"])',
        "print([i.name for i in session.get_inputs()])  # input_ids, attention_mask, ...",
    ]
    if not encoder:
        plain.append("# past_key_values.N.key/value: the KV cache, empty (length 0) on the first call")
    return "\n".join(
        [
            "## Loading",
            "",
            "With optimum (PATH: this directory):",
            "",
            "```python",
            *optimum,
            "```",
            "",
            "With plain ONNX Runtime:",
            "",
            "```python",
            *plain,
            "```",
            "",
        ]
    )


def _contrib_ops(quant: dict[str, Any]) -> str:
    ops = "MatMulNBits" + (" and GatherBlockQuantized" if quant.get("embedding_quantized") else "")
    return "\n".join(
        [
            "## Runtime requirements",
            "",
            f"This graph uses ONNX Runtime's contrib operators {ops} (domain `com.microsoft`). ONNX Runtime runs "
            "them (its CPU execution provider, and its CUDA one for MatMulNBits); a runtime without ONNX Runtime's "
            "contrib ops (a plain ONNX backend, or a converter that only knows the standard opsets) cannot load "
            "it: export without --quantize for those.",
            "",
        ]
    )


def _num(x: Any) -> str:
    if isinstance(x, float):
        return format(x, ".4g")
    return "-" if x is None else str(x)
