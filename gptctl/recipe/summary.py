"""The run's story in one table: perplexity at each stage, sparsity, artifact size, decode speed vs PyTorch.

Rows are read from the step manifests; a figure a step did not record is left out (None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gptctl.recipe.runner import RunReport


@dataclass
class Stage:
    stage: str
    step: str
    perplexity: float | None = None
    sparsity: float | None = None
    size_bytes: int | None = None
    tokens_per_s: dict[str, float] = field(default_factory=dict)  # provider -> decode tokens/s
    speedup: dict[str, float] = field(default_factory=dict)  # provider -> x vs PyTorch


def stages(report: RunReport) -> list[Stage]:
    """One row per model the run produced, plus the starting model when a step measured it."""
    rows: list[Stage] = []
    chosen = None
    for step in report.steps:
        m = step.metrics
        if step.kind == "select" and m.get("model"):
            chosen = m["model"]
        if step.manifest is None:
            continue
        if step.kind == "optimize":
            if not rows and m.get("ppl_before") is not None:
                rows.append(Stage(f"start: {chosen or 'input model'}", step.name, perplexity=m["ppl_before"]))
            rows.append(
                Stage(
                    f"{step.name}: {step.method}",
                    step.name,
                    perplexity=m.get("ppl_after"),
                    sparsity=m.get("sparsity_realised"),
                    size_bytes=m.get("size_bytes"),
                )
            )
        elif step.kind == "export":
            rows.extend(_export_rows(step.name, step.manifest))
    return rows


def _export_rows(name: str, manifest: dict[str, Any]) -> list[Stage]:
    m = manifest.get("metrics") or {}
    opts = manifest.get("options") or {}
    quant = opts.get("quantize") or "none"
    tokens, speedup = {}, {}
    for provider, b in (manifest.get("benchmark") or {}).items():
        if isinstance(b, dict) and b.get("available", True) and b.get("decode_tokens_per_s") is not None:
            tokens[provider] = b["decode_tokens_per_s"]
            if b.get("decode_speedup_vs_pytorch") is not None:
                speedup[provider] = b["decode_speedup_vs_pytorch"]
    rows = []
    if m.get("ppl_fp32") is not None and quant not in ("none", None):
        rows.append(Stage(f"{name}: onnx fp32", name, perplexity=m["ppl_fp32"]))
    rows.append(
        Stage(
            f"{name}: onnx {quant if quant != 'none' else 'fp32'}",
            name,
            perplexity=m.get("ppl_quantized", m.get("ppl_fp32")),
            size_bytes=m.get("size_bytes"),
            tokens_per_s=tokens,
            speedup=speedup,
        )
    )
    return rows
