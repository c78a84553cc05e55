"""The optimize methods, by name: where each is implemented, its options, and its one-line help.

Names, not imports: adding a method is a module (with `TRAINS`, `ARTIFACT`, `apply(job)`, `save(job, dir)`)
plus one line here; `gptctl optimize`'s subcommands, their flags and help, and the recipe's `method:`
choices all come from this table, and `--help` imports none of the method modules.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from gptctl.errors import BadInput


@dataclass(frozen=True)
class Method:
    """One optimize method."""

    module: str  # implements apply/save
    options: str  # "module:Class" of its LightOptions (light to import: the CLI builds its flags from it)
    help: str  # the subcommand's one-line help
    summary: str  # which summary the CLI prints: "training" (loss, throughput) or "sparsity"


_OPTIONS = "gptctl.optimize.options"

REGISTRY: dict[str, Method] = {
    "lora": Method(
        "gptctl.optimize.lora",
        f"{_OPTIONS}:LoraOptions",
        "Train LoRA adapters on your data; saves the adapter (and with --merge the merged model).",
        "training",
    ),
    "prompt-tuning": Method(
        "gptctl.optimize.prompt_tuning",
        f"{_OPTIONS}:PromptTuningOptions",
        "Learn virtual prompt tokens on your data; saves the peft adapter.",
        "training",
    ),
    "prune": Method(
        "gptctl.optimize.prune",
        f"{_OPTIONS}:PruneOptions",
        "Zero the least important attention/MLP weights (magnitude or wanda), permanently.",
        "sparsity",
    ),
}


def _check(method: str) -> Method:
    if method not in REGISTRY:
        raise BadInput(f"unknown optimize method {method!r}", f"choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[method]


def options_class(method: str) -> type:
    """The options class of `method` (fields = CLI flags in snake_case)."""
    module, _, name = _check(method).options.partition(":")
    return getattr(importlib.import_module(module), name)


def method_module(method: str) -> ModuleType:
    """The module implementing `method` (imported now, with whatever it imports at the top)."""
    return importlib.import_module(_check(method).module)
