"""The interface every export pass implements, the state they share, and the loop that runs them.

A pass says whether it applies (None, or the reason it is skipped), runs on the typed `ExportState`,
and returns what it did; `run_passes` times every pass in one place, adds the time to the pass's
metric (passes that share a metric, like the post-processing that `onnx_export_s` has always covered,
add up), and records one `PassRecord` per pass for the manifest's `passes` list.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gptctl.export.onnx_export import MODEL_FILE
from gptctl.export.options import ExportOptions
from gptctl.progress import Progress

FP32_DIR = ".fp32"  # where the fp32 graph waits while a converted graph is validated against it


@dataclass
class PassRecord:
    """One line of the manifest's `passes` list."""

    name: str
    ran: bool
    seconds: float = 0.0
    reason: str | None = None  # why it was skipped
    summary: dict[str, Any] = field(default_factory=dict)  # what it did, in a few figures

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "ran": self.ran, "seconds": self.seconds}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.summary:
            out["summary"] = self.summary
        return out


@dataclass
class ExportState:
    """Everything the passes read and write, from the loaded model to the validated artifact."""

    work: Path  # the output directory being written (atomically renamed at the end)
    source: Any  # gptctl.model_source.ModelSource
    progress: Progress
    eval_records: list | None = None  # --eval-data, read before any model loaded
    # Loaded (pass `load`).
    model: Any = None
    tokenizer: Any = None
    config: Any = None
    vocab_size: int = 0
    reference: Any = None  # gptctl.export.validate.TorchReference
    prefix: list | None = None  # prompt-tuning prefix KV cache, per layer (key, value)
    lora_merge: dict[str, Any] | None = None
    # The graph, in memory until it is saved (None once the quantized/converted graph is on disk).
    proto: Any = None
    fp32_path: Path | None = None
    fp32_lm: Any = None  # one OrtCausalLM on the fp32 graph: validation, perplexity, comparisons
    final_lm: Any = None  # one on the shipped graph when it differs from the fp32 one
    eval_samples: list | None = None
    validation: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    # Manifest sections by name (optimization, shape_sharing, quantization), in the order they appear.
    sections: dict[str, Any] = field(default_factory=dict)

    def staged(self, opts: ExportOptions) -> bool:
        """The shipped graph is converted from the validated fp32 one (quantized or fp16)."""
        return opts.quantize != "none" or opts.dtype == "fp16"

    def shipped_lm(self, opts: ExportOptions) -> Any:
        """A session on the shipped `model.onnx` (opened once, on first use)."""
        if self.final_lm is None:
            from gptctl.runtime.session import OrtCausalLM

            self.final_lm, _ = OrtCausalLM.from_path(self.work / MODEL_FILE, "cpu", threads=opts.threads)
        return self.final_lm


class ExportPass(Protocol):
    """One step of the export. `metric`: the timing metric it adds its seconds to (None: only `passes`)."""

    name: str
    metric: str | None

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        """None when the pass runs; else the reason it is skipped (recorded in the manifest)."""
        ...

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any] | None:
        """Do the work on `state`; return a short summary of what it did (or None)."""
        ...


def run_passes(passes: Sequence[ExportPass], state: ExportState, opts: ExportOptions) -> list[PassRecord]:
    """Run `passes` in order on `state`; time each one; return their records (skipped ones included)."""
    records = []
    for p in passes:
        reason = p.applies(state, opts)
        if reason is not None:
            records.append(PassRecord(p.name, ran=False, reason=reason))
            continue
        t = time.perf_counter()
        summary = p.run(state, opts) or {}
        seconds = time.perf_counter() - t
        if p.metric:
            state.metrics[p.metric] = round(state.metrics.get(p.metric, 0.0) + seconds, 3)
        records.append(PassRecord(p.name, ran=True, seconds=round(seconds, 3), summary=summary))
    return records
