"""Pass `fold_prompt_prefix`: a prompt-tuning soft prompt becomes a constant prefix KV cache in the graph."""

from __future__ import annotations

from typing import Any

from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class FoldPromptPrefix:
    name = "fold_prompt_prefix"
    metric = "onnx_export_s"

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        return None if state.prefix is not None else "not a prompt-tuning adapter"

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.export.onnx_export import fold_prompt_prefix

        state.metrics["prompt_virtual_tokens"] = fold_prompt_prefix(state.proto, state.prefix)
        return {"virtual_tokens": state.metrics["prompt_virtual_tokens"]}


FOLD_PROMPT_PREFIX = FoldPromptPrefix()
