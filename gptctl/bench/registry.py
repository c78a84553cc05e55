"""Benchmark backends by name. The registry holds import paths, not imports: adding a backend is a
module with a class that has `measure(spec) -> dict`, plus one line here."""

from __future__ import annotations

import importlib
from typing import Any

# name -> (module, class, constructor kwargs)
BACKENDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "cpu": ("gptctl.bench.ort", "OrtBackend", {"provider": "cpu"}),
    "cuda": ("gptctl.bench.ort", "OrtBackend", {"provider": "cuda"}),
    "tensorrt": ("gptctl.bench.ort", "OrtBackend", {"provider": "tensorrt"}),
    "pytorch": ("gptctl.bench.torch_eager", "TorchEagerBackend", {}),
}


def get_backend(name: str) -> Any:
    if name not in BACKENDS:
        raise KeyError(f"unknown benchmark backend {name!r}; known: {', '.join(BACKENDS)}")
    module, cls, kwargs = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)(**kwargs)
