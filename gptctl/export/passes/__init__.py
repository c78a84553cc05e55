"""The export as an ordered list of passes (see `base` for the interface).

Each pass is one small module: it says whether it applies (or why not), runs on the typed
`ExportState`, and returns what it did; `gptctl.export.pipeline` runs `PASSES` in order, times each one
and records the list in the manifest (`passes`). A new graph transform (fused QKV, GQA) is one module
plus one line here, placed before `SAVE_FP32` so that validation checks the graph it produces.
"""

from gptctl.export.passes.base import ExportPass, ExportState, PassRecord, run_passes
from gptctl.export.passes.compare import COMPARE_CONVERTED
from gptctl.export.passes.fp16 import CONVERT_FP16
from gptctl.export.passes.fusions import OPTIMIZE
from gptctl.export.passes.gqa import FAST_GRAPH
from gptctl.export.passes.load import LOAD
from gptctl.export.passes.onnx_graph import ONNX_EXPORT
from gptctl.export.passes.perplexity import PERPLEXITY_FP32, PERPLEXITY_QUANTIZED
from gptctl.export.passes.prompt_prefix import FOLD_PROMPT_PREFIX
from gptctl.export.passes.quantize import QUANTIZE
from gptctl.export.passes.save_fp32 import SAVE_FP32
from gptctl.export.passes.shape_sharing import SHARE_SHAPES
from gptctl.export.passes.tie_lm_head import TIE_LM_HEAD
from gptctl.export.passes.validate import VALIDATE

PASSES: list[ExportPass] = [
    LOAD,
    FAST_GRAPH,  # before onnx_export, which it replaces for Llama-family decoders
    ONNX_EXPORT,
    TIE_LM_HEAD,
    FOLD_PROMPT_PREFIX,
    OPTIMIZE,
    SHARE_SHAPES,
    SAVE_FP32,
    VALIDATE,
    PERPLEXITY_FP32,
    QUANTIZE,
    CONVERT_FP16,
    PERPLEXITY_QUANTIZED,
    COMPARE_CONVERTED,
]

__all__ = ["PASSES", "ExportPass", "ExportState", "PassRecord", "run_passes"]
