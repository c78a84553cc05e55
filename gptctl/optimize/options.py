"""The options of every optimize method: one `LightOptions` class each, shared by the CLI and recipes.

Field names are the CLI flag names in snake_case (`--max-length` -> `max_length`). The CLI builds
its flags from these declarations (`help` is the flag's help, `panel` groups it), so a field added
here is a flag everywhere. Nothing heavy is imported: `gptctl --help` must stay light.
"""

from __future__ import annotations

import re
from typing import Any

from gptctl.options import LightOptions, option

_NM = re.compile(r"^(\d+):(\d+)$")


def _opt(kind: str, default: Any, description: str, panel: str, **kw: Any) -> Any:
    return option(kind, None if default is ... else default, description, panel=panel, required=default is ..., **kw)


class OptimizeOptions(LightOptions):
    """What every method shares: the input model, the data, the evaluation and the output."""

    model: str = _opt(
        "str",
        ...,
        "Model: HF directory, Hub id (local cache), .gguf file, pkg:PACKAGE/FILE or `select --output` JSON.",
        "Input",
    )
    output: str = _opt("str", ..., "Output directory (written atomically; must be empty unless --overwrite).", "Output")
    data: str | None = _opt(
        "str", None, "Data: .jsonl ({text} | {prompt, completion} | {messages}) or .txt (blank-line separated).", "Data"
    )
    eval_data: str | None = _opt(
        "str", None, "Held-out evaluation data (same formats); perplexity is measured before and after.", "Data"
    )
    eval_split: float | None = _opt(
        "float",
        None,
        "Hold out this fraction of --data (seeded) for evaluation instead of --eval-data.",
        "Data",
        gt=0,
        lt=1,
    )
    max_length: int = _opt(
        "int", 512, "Longest sequence in tokens (longer samples are skipped, or split with --packing).", "Data", ge=8
    )
    packing: bool = _opt(
        "bool", False, "Pack short samples into full --max-length sequences (faster on short data).", "Data"
    )
    batch_size: int = _opt("int", 4, "Sequences per batch (per process).", "Training", ge=1)
    seed: int = _opt("int", 0, "Random seed (data split, shuffling, initialisation).", "Training")
    precision: str = _opt(
        "str",
        "auto",
        "auto = bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU.",
        "Training",
        choices=("auto", "fp32", "bf16", "fp16"),
    )
    overwrite: bool = _opt("bool", False, "Replace a non-empty --output.", "Output")
    trust_remote_code: bool = _opt("bool", False, "Allow the model's own Python code from its repository.", "Input")

    def check_eval_source(self) -> None:
        if self.eval_data and self.eval_split is not None:
            raise ValueError("pass either --eval-data or --eval-split, not both")
        if self.eval_split is not None and not self.data:
            raise ValueError("--eval-split needs --data to split")


class TrainingOptions(OptimizeOptions):
    """Options of the methods that train (LoRA, prompt tuning): one loop, shared."""

    data: str = _opt(
        "str",
        ...,
        "Training data: .jsonl ({text} | {prompt, completion} | {messages}) or .txt (blank-line separated).",
        "Data",
    )
    lr: float = _opt("float", 2e-4, "Peak learning rate (AdamW).", "Training", gt=0)
    epochs: float = _opt(
        "float", 1.0, "Passes over the training data (ignored when --max-steps is given).", "Training", gt=0
    )
    max_steps: int | None = _opt("int", None, "Stop after this many optimizer steps.", "Training", ge=1)
    grad_accum: int = _opt("int", 1, "Micro-batches accumulated per optimizer step.", "Training", ge=1)
    # constant by default: at the same peak rate a short run (tens of steps) that decays to zero spends
    # half its steps at half the rate; issue 1 measured held-out perplexity 23.6 (linear, dropout 0.05)
    # against 15.9 (constant, no dropout) for 30 steps on 40 samples. cosine ends at 10% of --lr.
    schedule: str = _opt(
        "str",
        "constant",
        "Learning-rate schedule after warmup: constant, cosine (to 10% of --lr) or linear (to 0).",
        "Training",
        choices=("constant", "cosine", "linear"),
    )
    warmup: float = _opt(
        "float",
        0.0,
        "Linear warmup: a fraction of the steps if < 1 (0.1), else a number of steps (20).",
        "Training",
        ge=0,
    )
    weight_decay: float = _opt("float", 0.0, "AdamW weight decay.", "Training", ge=0)
    max_grad_norm: float = _opt("float", 1.0, "Clip gradients to this norm (0 = no clipping).", "Training", ge=0)
    gradient_checkpointing: bool = _opt(
        "bool", False, "Recompute activations in backward: less memory, slower steps.", "Training"
    )
    checkpoint_every: int = _opt("int", 50, "Save a resumable checkpoint every N optimizer steps.", "Output", ge=1)
    resume: bool = _opt("bool", False, "Continue an interrupted run from its last checkpoint.", "Output")

    @staticmethod
    def normalise_warmup(v: float, done: dict) -> float:
        if v >= 1 and v != int(v):
            raise ValueError("--warmup is a fraction (< 1) or a whole number of steps")
        return v


class LoraOptions(TrainingOptions):
    """LoRA: low-rank adapters on the attention and MLP projections."""

    rank: int = _opt("int", 8, "LoRA rank r.", "LoRA", ge=1)
    alpha: float = _opt("float", 16.0, "LoRA alpha (the update is scaled by alpha / rank).", "LoRA", gt=0)
    # 0 (peft's own default): dropout regularises long runs, but on a short one it only slows learning
    # (see `schedule`) and costs a copy of every adapted layer's input per step.
    dropout: float = _opt(
        "float", 0.0, "Dropout on the LoRA input (try 0.05 on long runs over little data).", "LoRA", ge=0, lt=1
    )
    target_modules: list[str] | None = _opt(
        "list[str]",
        None,
        "Module names to adapt, comma-separated or repeated (default: the architecture's attention "
        "+ MLP projections; 'all-linear').",
        "LoRA",
    )
    merge: bool = _opt("bool", False, "Also save the merged full model in OUTPUT/merged/.", "Output")

    @staticmethod
    def normalise_target_modules(v: list[str], done: dict) -> list[str]:
        if not v:
            raise ValueError("--target-modules is empty")
        return v


class PromptTuningOptions(TrainingOptions):
    """Prompt tuning: learn virtual token embeddings prepended to every input; the model is frozen."""

    lr: float = _opt("float", 3e-2, "Peak learning rate (AdamW); prompt tuning wants a high one.", "Training", gt=0)
    num_virtual_tokens: int = _opt("int", 20, "Number of virtual tokens learned.", "Prompt tuning", ge=1)
    init_text: str | None = _opt(
        "str", None, "Initialise the virtual tokens from this text's embeddings (default: random).", "Prompt tuning"
    )

    @staticmethod
    def normalise_init_text(v: str, done: dict) -> str:
        if v is not None and not v.strip():
            raise ValueError("--init-text is empty")
        return v


class PruneOptions(OptimizeOptions):
    """Pruning: zero the least important weights of the attention and MLP projections, permanently."""

    ratio: float | None = _opt(
        "float",
        None,
        "Fraction of weights to zero, strictly between 0 and 1 (N:M structures imply it).",
        "Pruning",
        gt=0,
        lt=1,
    )
    method: str = _opt(
        "str",
        "magnitude",
        "magnitude = |W|; wanda = |W| x input activation norm, calibrated on --data.",
        "Pruning",
        choices=("magnitude", "wanda"),
    )
    scope: str = _opt(
        "str",
        "layer",
        "layer = the same ratio in every layer; global = one threshold over all.",
        "Pruning",
        choices=("layer", "global"),
    )
    structure: str = _opt(
        "str",
        "unstructured",
        "unstructured, or N:M (e.g. 2:4: at most N non-zeros in every M consecutive inputs).",
        "Pruning",
    )
    calib_samples: int = _opt("int", 64, "Calibration sequences taken from --data for wanda.", "Pruning", ge=1)
    include_lm_head: bool = _opt(
        "bool", False, "Prune the LM head too (when tied, this prunes the input embeddings as well).", "Pruning"
    )

    @staticmethod
    def normalise_structure(v: str, done: dict) -> str:
        v = v.strip().lower()
        if v == "unstructured":
            return v
        m = _NM.match(v)
        if not m or not (0 < int(m.group(1)) < int(m.group(2))):
            raise ValueError("--structure is 'unstructured' or N:M with 0 < N < M (e.g. 2:4)")
        return v

    @property
    def n_m(self) -> tuple[int, int] | None:
        """(N, M) for an N:M structure, None when unstructured."""
        m = _NM.match(self.structure)
        return (int(m.group(1)), int(m.group(2))) if m else None

    @property
    def sparsity(self) -> float:
        """The sparsity asked for: --ratio, or 1 - N/M for an N:M structure."""
        nm = self.n_m
        return 1 - nm[0] / nm[1] if nm else float(self.ratio)

    def check_consistent(self) -> None:
        nm = self.n_m
        if nm is None and self.ratio is None:
            raise ValueError("--ratio is required for unstructured pruning (e.g. --ratio 0.3)")
        if nm is not None:
            implied = 1 - nm[0] / nm[1]
            if self.ratio is not None and abs(self.ratio - implied) > 1e-9:
                raise ValueError(
                    f"--structure {self.structure} means a ratio of {implied:g}; drop --ratio or pass "
                    "--ratio {implied:g}"
                )
            if self.scope == "global":
                raise ValueError("an N:M structure is applied in every group of every layer; use --scope layer")
        if self.method == "wanda":
            if not self.data:
                raise ValueError("--method wanda calibrates on --data; pass a data file")
            if self.scope == "global":
                raise ValueError("wanda compares weights within each output row; use --scope layer")
