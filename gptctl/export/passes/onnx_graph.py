"""Pass `onnx_export`: optimum's exporter builds the graph, loaded into memory for the passes after it."""

from __future__ import annotations

import shutil
from typing import Any

from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class OnnxExport:
    name = "onnx_export"
    metric = "onnx_export_s"

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        return "the fast_graph pass built the graph" if state.proto is not None else None

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.export import onnx_export as ox

        state.progress.info(f"exporting with optimum ({opts.task})")
        raw_dir = state.work / ".optimum"
        state.proto = ox.load_onnx(ox.export_with_optimum(state.model, raw_dir, task=opts.task, opset=opts.opset))
        shutil.rmtree(raw_dir, ignore_errors=True)
        state.metrics["layout"] = "optimum"
        return {"nodes": len(state.proto.graph.node)}


ONNX_EXPORT = OnnxExport()
