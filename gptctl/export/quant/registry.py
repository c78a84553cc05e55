"""The quantization methods `gptctl export --quantize` offers: names, help and import paths only.

Nothing heavy is imported here (no numpy, onnx or onnxruntime), so the CLI's `--help` and the option
classes can read the choices. A new method is one module under `gptctl/export/quant/` plus one entry
in `QUANT_METHODS`; `load_method` imports it only when an export runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol


class QuantMethod(Protocol):
    """What a registered target is: quantizes an onnx ModelProto for `gptctl export`."""

    name: str

    def quantize(self, proto: Any, opts: Any) -> tuple[Any, dict[str, Any]]:
        """Return (the quantized graph, the manifest's `quantization` section); `opts` is ExportOptions.
        Methods with `uses_calibration = True` also take `calibration=` (tokenised samples or None)."""
        ...


@dataclass(frozen=True)
class QuantMethodSpec:
    """One registered method: `target` is "module:attribute" of an object with `quantize(proto, options)`."""

    name: str
    target: str
    help: str


QUANT_METHODS: dict[str, QuantMethodSpec] = {
    spec.name: spec
    for spec in (
        QuantMethodSpec(
            "int8",
            "gptctl.export.quant.planned:INT8",
            "weight-only int8 MatMulNBits, symmetric, scales searched per block (errors weighted by "
            "calibration activations)",
        ),
        QuantMethodSpec(
            "int4",
            "gptctl.export.quant.planned:INT4",
            "weight-only int4 MatMulNBits, symmetric (pruned zeros stay exact), scales searched per block "
            "with errors weighted by calibration activations; weights already on a 4-bit grid (GGUF Q4) "
            "kept exactly; a tied embedding/LM head stored once at 8 bits",
        ),
        QuantMethodSpec(
            "int4-mixed",
            "gptctl.export.quant.planned:INT4_MIXED",
            "int4 with llama.cpp Q4_K_M's 8-bit tensors (attention V, the whole fused q|k|v in the fast layout, "
            "and MLP down in the first and last eighth of the layers and every third between)",
        ),
        QuantMethodSpec(
            "int4-auto",
            "gptctl.export.quant.planned:INT4_AUTO",
            "int4 with the weights measured most sensitive at 8 bits: each weight's KL to the fp32 model alone "
            "at 4 bits, on calibration text; the most KL saved per byte within --int8-share of the parameters",
        ),
        QuantMethodSpec(
            "int4-gptq",
            "gptctl.export.quant.planned:INT4_GPTQ",
            "int4 by GPTQ (rounding errors pushed onto later inputs through calibration Hessians); "
            "needs --calibration-data",
        ),
        QuantMethodSpec(
            "int4-rtn",
            "gptctl.export.quant.rtn:INT4",
            "the former int4: asymmetric round-to-nearest, 4-bit embedding and a separate 8-bit LM head",
        ),
    )
}
# Methods that cannot run without --calibration-data (checked before any model loads).
REQUIRES_CALIBRATION: tuple[str, ...] = ("int4-gptq",)

NO_QUANTIZATION = "none"
# The allowed values of `--quantize` / ExportOptions.quantize, in the order the CLI lists them.
QUANT_CHOICES: tuple[str, ...] = (NO_QUANTIZATION, *QUANT_METHODS)


def quantize_help() -> str:
    """The `--quantize` help text, derived from the registry."""
    methods = "; ".join(f"{s.name}: {s.help}" for s in QUANT_METHODS.values())
    return f"{', '.join(QUANT_CHOICES)} (default {NO_QUANTIZATION}). {methods}; the LM head included."


def load_method(name: str) -> QuantMethod:
    """Import and return the method registered as `name` (KeyError names the known ones)."""
    try:
        spec = QUANT_METHODS[name]
    except KeyError:
        raise KeyError(f"unknown quantization method {name!r}; known: {', '.join(QUANT_METHODS)}") from None
    module, _, attr = spec.target.partition(":")
    return getattr(importlib.import_module(module), attr)
