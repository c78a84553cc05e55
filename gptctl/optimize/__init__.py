"""`gptctl optimize`: adapt (LoRA, prompt tuning) or shrink (pruning) a causal LM, measuring quality.

    from gptctl.optimize import optimize, options_model, METHODS
    manifest = optimize("lora", {"model": "...", "data": "train.jsonl", "output": "out/"})

Light to import: the methods and their heavy libraries load only when `optimize` runs.
"""

from __future__ import annotations

from typing import Any

from gptctl.optimize.registry import REGISTRY, options_class
from gptctl.progress import Progress

METHODS = tuple(REGISTRY)  # ("lora", "prompt-tuning", "prune")


def options_model(method: str) -> type:
    """The options class of `method` (fields = CLI flags in snake_case)."""
    return options_class(method)


def optimize(method: str, options: Any, progress: Progress | None = None) -> dict[str, Any]:
    """Run one optimize method and return its manifest (as written to `<output>/gptctl.json`).

    Args:
        method: one of METHODS.
        options: an instance of `options_model(method)`, or a dict of its fields.
        progress: where to report progress (the CLI draws bars); None reports nothing.
    Raises:
        GptctlError: bad options, model, data or output directory (BadInput, exit 2).
    """
    from gptctl.optimize.pipeline import run_method

    return run_method(method, options, progress)
