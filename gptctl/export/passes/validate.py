"""Pass `validate`: ONNX Runtime against PyTorch on the fp32 graph; over --atol the export fails here."""

from __future__ import annotations

from typing import Any

from gptctl.export.options import ExportOptions
from gptctl.export.passes.base import ExportState


class Validate:
    name = "validate"
    metric = "validation_s"

    def applies(self, state: ExportState, opts: ExportOptions) -> str | None:
        return None

    def run(self, state: ExportState, opts: ExportOptions) -> dict[str, Any]:
        from gptctl.export.validate import raise_if_failed, validate_decoder, validate_encoder

        state.progress.info("validating ONNX Runtime against PyTorch")
        common = {"atol": opts.atol, "vocab_size": state.vocab_size, "threads": opts.threads}
        if opts.task == "feature-extraction":
            validation = validate_encoder(state.fp32_path, state.reference, state.tokenizer, **common)
        else:
            from gptctl.runtime.session import OrtCausalLM

            state.fp32_lm, _ = OrtCausalLM.from_path(state.fp32_path, "cpu", threads=opts.threads)
            validation = validate_decoder(
                state.fp32_path,
                state.reference,
                state.tokenizer,
                greedy_tokens=opts.greedy_tokens,
                lm=state.fp32_lm,
                **common,
            )
        if state.lora_merge is not None:
            validation["lora_merge"] = state.lora_merge
        conversion = opts.quantize if opts.quantize != "none" else "fp16"
        staged = state.staged(opts)
        validation["checked_graph"] = f"fp32 graph before {conversion} conversion" if staged else "model.onnx"
        state.validation = validation
        raise_if_failed(validation)
        return {"passed": validation["passed"], "max_abs_diff": validation.get("max_abs_diff")}


VALIDATE = Validate()
