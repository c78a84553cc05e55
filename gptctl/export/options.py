"""Options of `gptctl export` (field names = CLI flag names in snake_case).

Declared with `gptctl.options.option` (the flags of `gptctl export` come from these fields),
validated before any model is loaded; recipes use the same class for their `export` steps.
"""

from __future__ import annotations

from gptctl.export.quant.registry import QUANT_CHOICES, QUANT_METHODS, REQUIRES_CALIBRATION
from gptctl.options import option
from gptctl.runtime.settings import BenchSettings

TASKS = ("text-generation-with-past", "text-generation", "feature-extraction")
LAYOUTS = ("fast", "optimum")
_Q = "Quantization"


class ExportOptions(BenchSettings):
    """`gptctl export`: one model in, one validated ONNX artifact out."""

    model: str = option(
        "str",
        None,
        "Model dir, adapter dir (any `gptctl optimize` output), .gguf, pkg:PACKAGE/FILE or Hub id (local cache).",
        required=True,
        short="-m",
        panel="Input",
    )
    output: str = option(
        "str", None, "Output directory (written atomically).", required=True, short="-o", panel="Output"
    )
    overwrite: bool = option("bool", False, "Replace a non-empty --output.", panel="Output")
    task: str = option(
        "str",
        "text-generation-with-past",
        "What the graph computes (with-past: with a KV cache).",
        choices=TASKS,
        panel="Input",
    )
    atol: float = option(
        "float",
        1e-3,
        "Largest |ONNX - PyTorch| allowed on any output (prefill and one decode "
        "step); over it the export fails (exit 1).",
        gt=0,
        panel="Validation",
    )
    opset: int | None = option("int", None, "ONNX opset (default: optimum's for the architecture).", ge=14, le=23)
    optimize: bool = option("bool", False, "ONNX Runtime transformer fusions (where the architecture is supported).")
    # The fast graph (export/llama_graph.py, pass `fast_graph`) is built from the weights for Llama-family decoders;
    # every other model, or one it cannot express exactly, gets optimum's graph and the reason in the manifest.
    layout: str = option(
        "str",
        "fast",
        "Decoder graph: fast (Llama/Mistral/Qwen2: GroupQueryAttention, fused QKV and gate/up "
        "MatMuls, fused RMSNorm; optimum's inputs and outputs) or optimum (optimum's exporter as is).",
        choices=LAYOUTS,
    )
    # Choices from the quantization registry (gptctl/export/quant/registry.py): a method is a module plus a line there.
    quantize: str = option(
        "str",
        "none",
        "; ".join(f"{s.name}: {s.help}" for s in QUANT_METHODS.values())
        + "; every MatMul weight, the LM head included.",
        choices=QUANT_CHOICES,
        panel=_Q,
    )
    block_size: int = option("int", 32, "Weights per quantization scale (a power of two).", ge=16, le=256, panel=_Q)
    # 8 by default, as llama.cpp's Q4 formats keep the output matrix at 6+ bits.
    head_bits: int = option(
        "int",
        8,
        "LM head bits under --quantize int4 (int8 quantizes everything to 8): on "
        "SmolLM2-135M a 4-bit head cost +7% perplexity alone, an 8-bit one nothing measurable, "
        "for 28 MB instead of 14 MB.",
        choices=(4, 8),
        panel=_Q,
    )
    # The size budget of --quantize int4-auto (export/quant/sensitivity.py), a float `gptctl tune` can search.
    int8_share: float = option(
        "float",
        0.1,
        "--quantize int4-auto: share of the transformer's MatMul parameters kept at 8 bits (the weights "
        "measured most sensitive); each 0.1 adds ~0.05 bytes per parameter.",
        ge=0,
        le=1,
        panel=_Q,
    )
    # Read by the methods that weigh errors by activations (int4, int8, int4-mixed; int4-gptq requires it).
    calibration_data: str | None = option(
        "str",
        None,
        "Text (.txt or .jsonl, as --eval-data) whose activations "
        "weigh the quantization error per input channel; without it the methods "
        "calibrate on text the fp32 model generates itself. Use training text, "
        "not the eval text.",
        panel=_Q,
    )
    dtype: str = option(
        "str",
        "fp32",
        "fp16 halves size and suits GPU providers; validation then runs the fp32 graph first.",
        choices=("fp32", "fp16"),
        panel=_Q,
    )
    eval_data: str | None = option(
        "str",
        None,
        "Text (.txt, or .jsonl with a 'text' field) for perplexity of the fp32 and quantized graphs.",
        panel="Validation",
    )
    greedy_tokens: int = option(
        "int",
        16,
        "Tokens of greedy generation that must match PyTorch token for token.",
        ge=1,
        le=1024,
        panel="Validation",
    )
    # The gate on the shipped quantized graph against the validated fp32 one (export/validate.py
    # `check_converted`). Measured on the pruned quickstart SmolLM2-135M (24 fixed positions, 8 greedy tokens):
    # the former int4 (asymmetric RTN) 0.50 top-1, 0/8 greedy, perplexity x1.313; int4 with calibration
    # 0.667 top-1, 1/8 greedy, x1.042. A 4-bit 135M model moves a third of its argmaxes at +4% perplexity, so
    # top-1 and greedy thresholds are set to catch broken graphs, perplexity to catch lossy ones.
    min_top1_agreement: float = option(
        "float",
        0.55,
        "Quantized exports: least share of positions whose top-1 token "
        "matches the fp32 graph on the fixed validation inputs; below it the export "
        "fails (exit 1).",
        ge=0,
        le=1,
        panel="Validation",
    )
    min_greedy_prefix: float = option(
        "float",
        0.05,
        "Quantized exports: least share of --greedy-tokens generated "
        "identically to the fp32 graph before the first difference (0.05: the first "
        "token must agree).",
        ge=0,
        le=1,
        panel="Validation",
    )
    max_ppl_ratio: float = option(
        "float",
        1.15,
        "Quantized exports with --eval-data: largest perplexity ratio quantized / fp32.",
        ge=1,
        panel="Validation",
    )
    benchmark: bool = option("bool", False, "Benchmark the artifact per provider vs PyTorch eager.", panel="Benchmark")

    def check_one_precision_change(self) -> None:
        if self.quantize != "none" and self.dtype == "fp16":
            raise ValueError("--quantize and --dtype fp16 are exclusive: quantized weights keep fp32 activations")
        if self.head_bits == 4 and self.quantize != "int4":
            raise ValueError("--head-bits 4 only applies with --quantize int4")

    def check_calibration(self) -> None:
        if self.calibration_data and self.quantize == "none":
            raise ValueError("--calibration-data only applies with --quantize")
        if self.quantize in REQUIRES_CALIBRATION and not self.calibration_data:
            raise ValueError(f"--quantize {self.quantize} needs --calibration-data (text to measure activations on)")

    @staticmethod
    def normalise_calibration_data(v: str | None, done: dict) -> str | None:
        if v is not None and not v.startswith("pkg:"):
            from pathlib import Path

            if not Path(v).expanduser().is_file():
                raise ValueError(f"{v}: no such file")
        return v

    @staticmethod
    def normalise_block_size(v: int, done: dict) -> int:
        if v & (v - 1):
            raise ValueError("must be a power of two (16, 32, 64, 128, 256)")
        return v
