"""Reading an export artifact: which files are the graph, how big it is, what its config says."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

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
        raise BadInput(
            f"{artifact / 'config.json'} is missing or unreadable: {exc}", "pass a complete `gptctl export` directory"
        ) from exc
    vocab = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    if not vocab:
        raise BadInput(f"{artifact / 'config.json'} has no vocab_size")
    return int(vocab)


def check_onnx_file(path: os.PathLike) -> None:
    """Parse an ONNX graph (not its external weights) and check its external-data files cover what it
    names; a truncated or corrupt file is BadInput naming it, before any session is made."""
    import onnx

    path = Path(path)
    hint = "the file is truncated or corrupt: export it again (gptctl export)"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the bytes are not a whole ModelProto
        raise BadInput(
            f"{path} is truncated or corrupt: it does not parse as an ONNX model ({type(exc).__name__})", hint
        ) from exc
    if not model.graph.node:
        raise BadInput(f"{path} is truncated or corrupt: its graph has no nodes", hint)
    needed: dict[str, int] = {}
    for t in model.graph.initializer:  # where exporters put weights (subgraph constants stay inline)
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        needed[info["location"]] = max(needed.get(info["location"], 0), end)
    for name, end in sorted(needed.items()):
        data = path.parent / name
        if not data.is_file():
            raise BadInput(f"{path} names external data {data}, which is missing", hint)
        if data.stat().st_size < end:
            raise BadInput(
                f"{data} is truncated: {path} needs {end} bytes of it, the file has {data.stat().st_size}", hint
            )
