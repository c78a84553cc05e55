"""Pass `save_fp32`: the fp32 graph to disk, as `model.onnx`, or under .fp32/ when a converted graph ships."""

from __future__ import annotations

from typing import Any

from gptctl.export.onnx_export import MODEL_FILE
from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import FP32_DIR, ExportState


class SaveFp32:
    name = "save_fp32"
    metric = "save_s"

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        return None

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.export.onnx_export import save_onnx

        state.fp32_path = (state.work / FP32_DIR / MODEL_FILE) if state.staged(opts) else (state.work / MODEL_FILE)
        files = save_onnx(state.proto, state.fp32_path)
        return {"files": len(files)}


SAVE_FP32 = SaveFp32()
