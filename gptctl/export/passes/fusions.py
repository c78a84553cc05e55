"""Pass `optimize` (--optimize): ONNX Runtime's transformer fusions, where the architecture has them."""

from __future__ import annotations

from typing import Any

from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class TransformerFusions:
    name = "optimize"
    metric = "optimize_s"

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        if not opts.optimize:
            return "--optimize not set"
        return "the fast graph is fused already" if state.metrics.get("layout") == "fast" else None

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.export.optimize_graph import optimize_transformer

        state.progress.info("applying ONNX Runtime transformer fusions")
        state.proto, report = optimize_transformer(state.proto, state.config)
        state.sections["optimization"] = report
        return {"applied": report["applied"]}


OPTIMIZE = TransformerFusions()
