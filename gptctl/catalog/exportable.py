"""Architectures (transformers `model_type`) that optimum's ONNX exporter supports for
`text-generation-with-past`, kept as a static list so `select --exportable` never imports optimum.

`tests/test_catalog_exportable.py` checks this list against optimum's own TasksManager registry,
so a version bump of optimum-onnx that adds or drops an architecture fails the tests.
Generated from optimum 2.1.0 / optimum-onnx 0.1.0:
    import optimum.exporters.onnx.model_configs
    TasksManager.get_supported_model_type_for_task("text-generation-with-past", exporter="onnx")
"""

from __future__ import annotations

EXPORTABLE_ARCHITECTURES: frozenset[str] = frozenset(
    {
        "arcee",
        "bart",
        "bigbird_pegasus",
        "blenderbot",
        "blenderbot_small",
        "bloom",
        "codegen",
        "cohere",
        "deepseek_v3",
        "falcon",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3_text",
        "glm",
        "gpt2",
        "gpt_bigcode",
        "gpt_neo",
        "gpt_neox",
        "gpt_oss",
        "gptj",
        "granite",
        "helium",
        "internlm2",
        "llama",
        "marian",
        "mbart",
        "mistral",
        "mpt",
        "nemotron",
        "olmo",
        "olmo2",
        "opt",
        "pegasus",
        "phi",
        "phi3",
        "qwen2",
        "qwen3",
        "qwen3_moe",
        "smollm3",
        "stablelm",
    }
)


def normalise_architecture(name: str) -> str:
    """optimum spells some model types with '-' (blenderbot-small), transformers with '_'."""
    return name.strip().lower().replace("-", "_")


def is_exportable(architecture: str | None) -> bool:
    """True when optimum's ONNX exporter supports this architecture for text generation with a KV cache."""
    return architecture is not None and normalise_architecture(architecture) in EXPORTABLE_ARCHITECTURES
