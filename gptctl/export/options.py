"""Options of `gptctl export` and `gptctl bench` (field names = CLI flag names in snake_case).

Pydantic models with extra keys forbidden, validated before any model is loaded; recipes use the
same classes for their `export` steps.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PROVIDERS = ("cpu", "cuda", "tensorrt")
TASKS = ("text-generation-with-past", "text-generation", "feature-extraction")


def _split_list(value):
    # CLI values arrive as "cpu,cuda" or repeated flags; recipes may write lists or one string.
    if value is None:
        return value
    if isinstance(value, (str, int)):
        value = [value]
    out = []
    for item in value:
        if isinstance(item, str):
            out.extend(x.strip() for x in item.split(",") if x.strip())
        else:
            out.append(item)
    return out


class BenchSettings(BaseModel):
    """What a benchmark measures, and how often. Shared by `export --benchmark` and `bench`."""

    model_config = ConfigDict(extra="forbid")

    # Execution providers to measure; None = every provider that really initialises here.
    provider: Optional[list[Literal["cpu", "cuda", "tensorrt"]]] = None
    # Providers that must be active (CI gate): missing -> exit 1 instead of `available: false`.
    require_provider: list[Literal["cpu", "cuda", "tensorrt"]] = Field(default_factory=list)
    # Intra-op threads for ORT and torch; None = all cores.
    threads: Optional[int] = Field(default=None, ge=1, le=1024)
    # Tokens generated per decode measurement (after a prompt of the first prompt length).
    decode_tokens: int = Field(default=64, ge=2, le=4096)
    # Prefill grid: batch size x prompt length.
    prompt_lengths: list[int] = Field(default_factory=lambda: [32, 128])
    batch_sizes: list[int] = Field(default_factory=lambda: [1])
    # Timed runs per grid cell (and decode repetitions); warm-up runs are excluded from the figures.
    iterations: int = Field(default=10, ge=1, le=10000)
    warmup: int = Field(default=2, ge=0, le=1000)
    trust_remote_code: bool = False

    @field_validator("provider", "require_provider", "prompt_lengths", "batch_sizes", mode="before")
    @classmethod
    def _lists(cls, v):
        return _split_list(v)

    @field_validator("prompt_lengths", "batch_sizes")
    @classmethod
    def _positive(cls, v):
        if not v:
            raise ValueError("must name at least one value")
        if any(int(x) < 1 for x in v):
            raise ValueError("values must be >= 1")
        return v


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


class BenchOptions(BenchSettings):
    """`gptctl bench DIR`: benchmark an existing export artifact."""

    model: str  # the artifact directory written by `gptctl export`
    # Measure the PyTorch eager baseline (needs the artifact's input model to be loadable here).
    baseline: bool = True
