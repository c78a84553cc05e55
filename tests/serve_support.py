"""Shared by the tests/test_serve_*.py files: a tiny llama exported once per session, a live server in a thread.

The tiny models of tiny_models.py are initialised at std 0.02, so greedy decoding mostly repeats the last
token; weights redrawn at std 0.5 give generations that change from token to token, so equal outputs
(batched against batch-1, served against `lm.greedy`) mean something.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from tiny_models import build_tiny_model

WEIGHT_STD = 0.5


def build_lively_llama(directory: Path, seed: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    path = build_tiny_model("llama", directory, seed=seed)
    model = AutoModelForCausalLM.from_pretrained(path)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * WEIGHT_STD)
    model.save_pretrained(path)
    return path


def exported_llama(tmp_path_factory, seed: int = 0) -> Path:
    """An export of the lively tiny llama, made once per session and seed (shared by the serve test files)."""
    from gptctl.export import export_model

    root = tmp_path_factory.getbasetemp() / f"serve-llama-{seed}"
    out = root / "export"
    if not (out / "gptctl.json").is_file():
        model = build_lively_llama(root / "model", seed)
        export_model({"model": str(model), "output": str(out)})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving `create_app(state)` on 127.0.0.1 in a thread."""

    def __init__(self, state):
        import uvicorn

        from gptctl.serve.app import create_app

        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(state), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start in 10 s"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


class SlowSession:
    """An ONNX Runtime session that takes `delay` seconds more per run: requests that last long enough to
    be cancelled, queued behind or swapped under, without a big model."""

    def __init__(self, session, delay: float):
        self._session, self.delay = session, delay

    def run(self, *args, **kwargs):
        time.sleep(self.delay)
        return self._session.run(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)
