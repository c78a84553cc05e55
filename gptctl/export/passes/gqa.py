"""Pass `fast_graph` (--layout fast): Llama-family decoders get gptctl's own graph instead of optimum's.

The graph (gptctl/export/llama_graph.py) uses GroupQueryAttention, one fused q|k|v and one gate|up MatMul per
layer and fused RMSNorm, with optimum's inputs and outputs, so everything after this pass (tie, quantize,
validation against PyTorch) treats it as it treats optimum's; `onnx_export` is then skipped. A model it
cannot express exactly is skipped here with the reason, and optimum exports it as before.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class FastGraph:
    name = "fast_graph"
    metric = "onnx_export_s"  # it replaces optimum's export, so it is timed as the export

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        from gptctl.export.llama_graph import unsupported_reason

        if opts.layout != "fast":
            return f"--layout {opts.layout}"
        if opts.task != "text-generation-with-past":
            return f"--task {opts.task}: the fast graph is a decoder with a KV cache"
        if state.prefix is not None:
            return "a prompt-tuning prefix is folded into optimum's graph instead"
        return unsupported_reason(state.model)

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.export.llama_graph import build_fast_graph

        state.progress.info("building the fast Llama graph (GroupQueryAttention, fused projections)")
        state.proto = build_fast_graph(state.model, opset=opts.opset)
        state.metrics["layout"] = "fast"
        ops = Counter(n.op_type for n in state.proto.graph.node)
        return {"nodes": len(state.proto.graph.node), "matmuls": ops["MatMul"], "attention": ops["GroupQueryAttention"]}


FAST_GRAPH = FastGraph()
