"""Passes `perplexity_fp32` and `perplexity_quantized` (--eval-data): what quantization cost, on the
definition `gptctl optimize` uses (gptctl.evaluation), so the figures of the two steps compare."""

from __future__ import annotations

from typing import Any

from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class PerplexityFp32:
    name = "perplexity_fp32"
    metric = None

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        return None if state.eval_records is not None else "no --eval-data"

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.evaluation import eval_samples, perplexity_onnx

        state.eval_samples = eval_samples(
            state.tokenizer, state.eval_records, vocab_size=state.vocab_size, path=opts.eval_data
        )
        state.progress.info(f"perplexity of the fp32 graph on {len(state.eval_samples)} sequences")
        ppl = perplexity_onnx(state.fp32_lm, state.eval_samples)
        state.metrics["ppl_fp32"] = ppl["ppl"]
        state.metrics["eval_tokens"] = ppl["tokens"]
        return ppl


class PerplexityQuantized:
    name = "perplexity_quantized"
    metric = None

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        if opts.quantize == "none":
            return "not quantized"
        return None if state.eval_samples is not None else "no --eval-data"

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.evaluation import perplexity_onnx

        state.progress.info(f"perplexity of the {opts.quantize} graph")
        ppl = perplexity_onnx(state.shipped_lm(opts), state.eval_samples)
        metrics = state.metrics
        metrics["ppl_quantized"] = ppl["ppl"]
        metrics["ppl_ratio"] = round(ppl["ppl"] / metrics["ppl_fp32"], 4)
        report = state.sections["quantization"]
        report["ppl_fp32"], report["ppl_quantized"] = metrics["ppl_fp32"], ppl["ppl"]
        return ppl


PERPLEXITY_FP32 = PerplexityFp32()
PERPLEXITY_QUANTIZED = PerplexityQuantized()
