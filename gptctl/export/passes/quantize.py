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
        proto, report = load_method(opts.quantize).quantize(proto, opts)
        save_onnx(proto, state.work / MODEL_FILE)
        state.sections["quantization"] = report
        return {"method": opts.quantize, "matmuls_quantized": report.get("matmuls_quantized")}


QUANTIZE = Quantize()
