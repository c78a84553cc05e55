"""`gptctl export`: any model gptctl can read -> a validated ONNX artifact (optionally quantized, benchmarked).

Light on import: `export_model` loads the heavy modules when called.
"""

from __future__ import annotations

from typing import Any

from gptctl.export.options import ExportOptions

__all__ = ["ExportOptions", "export_model"]


def export_model(
    options: ExportOptions | dict[str, Any], progress: Any = None, *, benchmark: Any = None
) -> dict[str, Any]:
    """Export, validate (ONNX Runtime vs PyTorch) and optionally quantize/benchmark a model.

    Returns the manifest dict written to `<output>/gptctl.json` (plus `output`: the directory).
    See `gptctl.export.pipeline.export_model` for the errors it raises.
    """
    from gptctl.export.pipeline import export_model as _run

    return _run(options, progress, benchmark=benchmark)
