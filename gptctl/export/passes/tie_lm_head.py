"""Pass `tie_lm_head`: keep one copy of a tied LM head / embedding matrix on disk (fp32 and fp16)."""

from __future__ import annotations

from typing import Any

from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class TieLmHead:
    name = "tie_lm_head"
    metric = "onnx_export_s"  # part of the export's post-processing, as it has always been timed

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        if opts.quantize != "none":
            # Quantization wants the LM head as its own MatMul weight (the `quantize` pass says so too).
            return "untied for quantization"
        return None

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.export.onnx_export import tie_lm_head

        tied = tie_lm_head(state.proto)
        state.metrics["lm_head"] = "tied to the embedding" if tied else "own weight"
        return {"removed": tied}


TIE_LM_HEAD = TieLmHead()
