import os
import sys
from pathlib import Path

import pytest

# Never touch the network: tests build their own models.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """Return a function arch -> path of a tiny model directory (built once per session)."""
    cache: dict[str, Path] = {}

    def make(arch: str = "gpt2") -> Path:
        if arch not in cache:
            cache[arch] = build_tiny_model(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return cache[arch]

    return make


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_model_factory):
    return tiny_model_factory("gpt2")


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_factory):
    return tiny_model_factory("llama")


@pytest.fixture(scope="session")
def tiny_export_factory(tiny_model_factory, tmp_path_factory):
    """Return a function (arch, task) -> model.onnx of that tiny model exported by gptctl (once per session)."""
    cache: dict[tuple[str, str], Path] = {}

    def make(arch: str = "gpt2", task: str = "text-generation-with-past") -> Path:
        if (arch, task) not in cache:
            from gptctl.export import export_model

            out = tmp_path_factory.mktemp(f"onnx-{arch}") / "onnx"
            export_model({"model": str(tiny_model_factory(arch)), "output": str(out), "task": task})
            cache[arch, task] = out / "model.onnx"
        return cache[arch, task]

    return make
