"""Pass `convert_fp16` (--dtype fp16): weights and activations to float16, for GPU providers."""

from __future__ import annotations

from typing import Any

from gptctl.export.onnx_export import MODEL_FILE
from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class ConvertFp16:
    name = "convert_fp16"
    metric = None

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        return None if opts.dtype == "fp16" else f"--dtype {opts.dtype}"

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.export.onnx_export import convert_fp16, save_onnx

        state.progress.info("converting to fp16")
        proto, state.proto = state.proto, None
        save_onnx(convert_fp16(proto), state.work / MODEL_FILE)
        return {}


CONVERT_FP16 = ConvertFp16()
