"""Pass `compare_converted`: the shipped quantized/fp16 graph against the validated fp32 one."""

from __future__ import annotations

from typing import Any

from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class CompareConverted:
    name = "compare_converted"
    metric = None

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        if not state.staged(opts):
            return "model.onnx is the validated fp32 graph"
        return None if state.fp32_lm is not None else f"no decoder session for task {opts.task}"

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.export.validate import check_converted, compare_converted

        result = compare_converted(
            state.fp32_lm,
            state.shipped_lm(opts),
            state.tokenizer,
            vocab_size=state.vocab_size,
            greedy_tokens=opts.greedy_tokens,
        )
        state.validation["converted_vs_fp32"] = result
        if opts.quantize != "none":  # the shipped graph is gated; fp16 stays reported only
            check_converted(
                result,
                min_top1=opts.min_top1_agreement,
                min_greedy_prefix=opts.min_greedy_prefix,
                max_ppl_ratio=opts.max_ppl_ratio,
                ppl_ratio=state.metrics.get("ppl_ratio"),
                what=opts.quantize,
            )
            state.validation["checked_graph"] = f"fp32 graph against PyTorch, then the shipped {opts.quantize} graph"
            state.validation["passed"] = state.validation["passed"] and result["passed"]
        return {"passed": result.get("passed")}


COMPARE_CONVERTED = CompareConverted()
