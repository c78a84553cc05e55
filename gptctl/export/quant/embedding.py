"""int4 embedding table: Gather -> GatherBlockQuantized, through ONNX Runtime's own quantizer."""

from __future__ import annotations

from typing import Any

# It warns that it raises the opset/IR version for int4 types: expected, so silenced around the call
# only (gptctl.logs.quiet restores the level), not for the whole process.
_QUANTIZER_LOGGER = "onnxruntime.quantization.matmul_nbits_quantizer"


def quantize_embedding(proto: Any, block_size: int, *, accuracy_level: int) -> Any:
    """Quantize every Gather table to 4 bits (GatherBlockQuantized, 4 bits only); return the new graph."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from gptctl.logs import quiet

    ops = ("Gather",)
    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size,
        is_symmetric=False,
        accuracy_level=accuracy_level,
        bits=4,
        op_types_to_quantize=ops,
        quant_axes=(("Gather", 1),),
    )
    with quiet(_QUANTIZER_LOGGER, progress_bars=True):
        quantizer = MatMulNBitsQuantizer(
            proto,
            bits=4,
            block_size=block_size,
            is_symmetric=False,
            accuracy_level=accuracy_level,
            algo_config=config,
            op_types_to_quantize=ops,
        )
        quantizer.process()
    return quantizer.model.model
