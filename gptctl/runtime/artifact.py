"""Reading an export artifact: which files are the graph, how big it is, what its config says."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from gptctl.errors import BadInput


def is_onnx_file(path: Path) -> bool:
    """A graph file or its external-data file (what the manifest hashes and the size counts)."""
    return path.is_file() and (path.suffix == ".onnx" or path.name.endswith(".onnx_data"))


def onnx_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).iterdir() if is_onnx_file(p))


def file_bytes(paths: Sequence[os.PathLike]) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def artifact_vocab_size(artifact: Path) -> int:
    try:
        cfg = json.loads((artifact / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{artifact / 'config.json'} is missing or unreadable: {exc}", "pass a complete `gptctl export` directory") from exc
    vocab = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    if not vocab:
        raise BadInput(f"{artifact / 'config.json'} has no vocab_size")
    return int(vocab)
