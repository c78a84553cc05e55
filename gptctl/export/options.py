"""Options of `gptctl export` (field names = CLI flag names in snake_case).

Pydantic models with extra keys forbidden, validated before any model is loaded; recipes use the
same classes for their `export` steps.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from gptctl.runtime.settings import BenchSettings

TASKS = ("text-generation-with-past", "text-generation", "feature-extraction")


class ExportOptions(BenchSettings):
    """`gptctl export`: one model in, one validated ONNX artifact out."""

    model: str  # any `gptctl optimize` output, HF dir, .gguf, Hub id (local cache), pkg:PACKAGE/FILE
    output: str
    overwrite: bool = False
    task: Literal["text-generation-with-past", "text-generation", "feature-extraction"] = "text-generation-with-past"
    # Largest |ONNX - PyTorch| allowed on any output (prefill and one decode step); over it -> exit 1.
    atol: float = Field(default=1e-3, gt=0)
    opset: Optional[int] = Field(default=None, ge=14, le=23)
    # ONNX Runtime transformer fusions (where the architecture is supported).
    optimize: bool = False
    # Weight-only MatMulNBits quantization of every MatMul weight, the LM head included.
    quantize: Literal["none", "int8", "int4"] = "none"
    block_size: int = Field(default=32, ge=16, le=256)
    # Bits of the LM head under --quantize int4 (int8 quantizes everything to 8). 8 by default, as
    # llama.cpp's Q4 formats keep the output matrix at 6+ bits: on SmolLM2-135M a 4-bit head cost
    # +7% perplexity alone, an 8-bit one nothing measurable, for 28 MB instead of 14 MB.
    head_bits: Literal[4, 8] = 8
    # fp16 halves size and suits GPU providers; validation then runs the fp32 graph first.
    dtype: Literal["fp32", "fp16"] = "fp32"
    # Text (.txt, or .jsonl with a "text" field) for perplexity of the fp32 and quantized graphs.
    eval_data: Optional[str] = None
    benchmark: bool = False
    # Tokens of greedy generation that must match PyTorch token for token.
    greedy_tokens: int = Field(default=16, ge=1, le=1024)

    @model_validator(mode="after")
    def _one_precision_change(self):
        if self.quantize != "none" and self.dtype == "fp16":
            raise ValueError("--quantize and --dtype fp16 are exclusive: quantized weights keep fp32 activations")
        if self.head_bits == 4 and self.quantize != "int4":
            raise ValueError("--head-bits 4 only applies with --quantize int4")
        return self

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, v):
        if v & (v - 1):
            raise ValueError("must be a power of two (16, 32, 64, 128, 256)")
        return v
