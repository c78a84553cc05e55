"""`gptctl bench DIR`: benchmark an artifact that `gptctl export` wrote (read-only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gptctl.bench.options import BenchOptions
from gptctl.errors import BadInput
from gptctl.manifest import read_manifest
from gptctl.options import parse_options
from gptctl.progress import NULL_PROGRESS
from gptctl.runtime.artifact import artifact_vocab_size, check_onnx_file


def bench_artifact(options: BenchOptions | dict[str, Any], progress: Any = None) -> dict[str, Any]:
    opts = (
        options
        if isinstance(options, BenchOptions)
        else parse_options(BenchOptions, dict(options), what="bench options")
    )
    progress = progress or NULL_PROGRESS
    artifact = Path(opts.model).expanduser()
    if not artifact.is_dir():
        raise BadInput(f"{artifact} is not a directory", "pass the --output directory of `gptctl export`")
    if not (artifact / "model.onnx").is_file():
        raise BadInput(f"{artifact} has no model.onnx", "pass the --output directory of `gptctl export`")
    check_onnx_file(artifact / "model.onnx")  # a truncated graph is bad input (exit 2), not a session error
    manifest = read_manifest(artifact) or {"step": "export", "method": "onnx", "inputs": {}}
    vocab = artifact_vocab_size(artifact)
    source = baseline_source(manifest) if opts.baseline else None
    from gptctl.bench.runner import run_benchmark

    task = (manifest.get("options") or {}).get("task")  # None (an older manifest): the graph decides
    bench = run_benchmark(
        artifact.resolve(),
        opts,
        source_spec=source,
        vocab_size=vocab,
        baseline=opts.baseline,
        progress=progress,
        task=task,
    )
    manifest = dict(manifest)
    manifest["benchmark"] = bench
    return manifest


def baseline_source(manifest: dict[str, Any]) -> str | None:
    """The input model of an export, as a path or spec that still resolves here (else None)."""
    model = (manifest.get("inputs") or {}).get("model") or {}
    for key in ("path", "spec"):
        value = model.get(key)
        if value and (key == "spec" or Path(value).exists()):
            return value
    return None
