"""Where `gptctl serve start` runs the service, by name: names, help and import paths only.

Nothing heavy is imported here (no fastapi, uvicorn or ray), so `--help` and the CLI's `--backend` choices
read this table for free. A backend is a function `run(options: ServeOptions, on_ready, extra)` that serves
until it is stopped; `extra` is that backend's own options object (None when it has none). Adding one is a
module plus one entry in `BACKENDS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gptctl.errors import BadInput


@dataclass(frozen=True)
class Backend:
    """One registered backend: `target` is "module:function" of its run function."""

    name: str
    target: str
    help: str
    extra: str | None = None  # the `gptctl[...]` extra it needs installed, if any


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            "local",
            "gptctl.serve.server:run_server",
            "uvicorn in this process (or --replicas worker processes behind a local router)",
        ),
        Backend(
            "ray",
            "gptctl.serve.ray_backend:run_ray_server",
            "a Ray Serve deployment on a local Ray cluster or --ray-address (replicas, autoscaling, health checks)",
            extra="ray",
        ),
    )
}
DEFAULT_BACKEND = "local"
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)


def backend_help() -> str:
    """The `--backend` help text, derived from the registry."""
    return "; ".join(f"{b.name}: {b.help}" for b in BACKENDS.values()) + "."


def load_backend(name: str) -> Callable[..., Any]:
    """The run function of backend `name`, imported now."""
    if name not in BACKENDS:
        raise BadInput(f"unknown serve backend {name!r}", f"choose one of: {', '.join(BACKENDS)}")
    module, _, attr = BACKENDS[name].target.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_backend(name: str, options: Any, on_ready: Callable[[Any], None] | None = None, extra: Any = None) -> None:
    """Serve `options` (a ServeOptions) on backend `name` until it is stopped."""
    run = load_backend(name)
    if extra is None:
        return run(options, on_ready)
    return run(options, on_ready, extra)
