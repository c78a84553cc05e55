"""Pass `share_shapes`: every layer repeats the same shape arithmetic; let ONNX Runtime merge it."""

from __future__ import annotations

from typing import Any

from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class ShareShapes:
    name = "share_shapes"
    metric = "shape_sharing_s"

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        return None

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.export.shapes import share_shape_computations

        report = state.sections["shape_sharing"] = share_shape_computations(state.proto)
        return {"applied": report["applied"]}


SHARE_SHAPES = ShareShapes()
