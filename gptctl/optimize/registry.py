"""Method name -> module path and options class name. Names, not imports: adding a method is a
module plus one line here, and `--help` imports none of them."""

from __future__ import annotations

import importlib
from types import ModuleType

from gptctl.errors import BadInput

# name: (module implementing apply/save, options class in gptctl.optimize.options)
REGISTRY: dict[str, tuple[str, str]] = {
    "lora": ("gptctl.optimize.lora", "LoraOptions"),
    "prompt-tuning": ("gptctl.optimize.prompt_tuning", "PromptTuningOptions"),
    "prune": ("gptctl.optimize.prune", "PruneOptions"),
}


def _check(method: str) -> None:
    if method not in REGISTRY:
        raise BadInput(f"unknown optimize method {method!r}", f"choose one of: {', '.join(REGISTRY)}")


def options_class(method: str) -> type:
    _check(method)
    from gptctl.optimize import options

    return getattr(options, REGISTRY[method][1])


def method_module(method: str) -> ModuleType:
    _check(method)
    return importlib.import_module(REGISTRY[method][0])
