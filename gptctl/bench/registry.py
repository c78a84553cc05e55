"""Benchmark backends by name. The registry holds import paths, not imports.

The ONNX Runtime backends are one per execution provider of `gptctl.runtime.providers.EXECUTION_PROVIDERS`
(adding a provider there adds its backend here); another kind of backend is a module with a class that
has `measure(spec) -> dict`, plus one line in BACKEND_CLASSES.
"""

from __future__ import annotations

import importlib
from typing import Any

from gptctl.errors import BadInput
from gptctl.runtime.providers import EXECUTION_PROVIDERS

# backend kind -> (module, class)
BACKEND_CLASSES: dict[str, tuple[str, str]] = {
    "onnxruntime": ("gptctl.bench.ort", "OrtBackend"),
    "pytorch": ("gptctl.bench.torch_eager", "TorchEagerBackend"),
}

# name -> (module, class, constructor kwargs)
BACKENDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    **{name: (*BACKEND_CLASSES[p.backend], {"provider": name}) for name, p in EXECUTION_PROVIDERS.items()},
    "pytorch": (*BACKEND_CLASSES["pytorch"], {}),
}


def get_backend(name: str) -> Any:
    """An instance of benchmark backend `name` (an execution provider or "pytorch")."""
    if name not in BACKENDS:
        raise BadInput(f"unknown benchmark backend {name!r}", f"choose one of: {', '.join(BACKENDS)}")
    module, cls, kwargs = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)(**kwargs)
