"""Pass `quantize` (--quantize): the validated graph's weights through a method of the quantization registry."""

from __future__ import annotations

from typing import Any

from gptctl.export.onnx_export import MODEL_FILE
from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class Quantize:
    name = "quantize"
    metric = "quantize_s"

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        return None if opts.quantize != "none" else "--quantize none"

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.export.onnx_export import save_onnx
        from gptctl.export.quant import load_method

        state.metrics["lm_head"] = "untied for quantization"
        state.progress.info(f"quantizing weights to {opts.quantize} (MatMulNBits, block {opts.block_size})")
        proto, state.proto = state.proto, None  # the fp32 graph is on disk; keep one graph in memory
        method = load_method(opts.quantize)
        kwargs = {"calibration": calibration_samples(state, opts)} if getattr(method, "uses_calibration", False) else {}
        proto, report = method.quantize(proto, opts, **kwargs)
        save_onnx(proto, state.work / MODEL_FILE)
        state.sections["quantization"] = report
        return {"method": opts.quantize, "matmuls_quantized": report.get("matmuls_quantized")}


def calibration_samples(state: ExportState, opts: ExportOptions) -> list:
    """--calibration-data tokenised as --eval-data is; without it, text the fp32 graph generates greedily from
    the validation sentences (on the pruned quickstart SmolLM2-135M, measured: see quant/planned.py)."""
    from gptctl.evaluation import eval_samples, load_eval_records

    if opts.calibration_data:
        records = load_eval_records(opts.calibration_data)
        return eval_samples(state.tokenizer, records, vocab_size=state.vocab_size, path=opts.calibration_data)
    if state.fp32_lm is None:
        return []
    from gptctl.export.quant.calibration import self_generated_samples

    return self_generated_samples(state.fp32_lm, state.tokenizer, state.vocab_size)


QUANTIZE = Quantize()
