"""The manifest every step writes next to its output (`gptctl.json`), and the hashes it records.

A manifest says what ran (step, method, options), on what (input paths and content hashes,
the parent manifest), with which library versions, producing what (output hash) and with
which metrics. The next step reads it; `gptctl run` compares it to decide what to skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from gptctl import __version__
from gptctl.errors import BadInput

MANIFEST_NAME = "gptctl.json"
SCHEMA_VERSION = 1

# Libraries whose versions change results; recorded in every manifest.
_TRACKED = (
    "torch",
    "transformers",
    "peft",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "accelerate",
)


@dataclass
class Manifest:
    """What one step did. Serialised as `gptctl.json` in the step's output directory."""

    step: str  # "select" | "optimize" | "export"
    method: str | None = None  # e.g. "lora", "prune", "onnx"
    options: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)  # name -> {"path", "sha256", ...}
    outputs: dict[str, Any] = field(default_factory=dict)  # name -> {"path", "sha256", "bytes"}
    metrics: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] | None = None  # the input's own manifest, when it came from gptctl
    extra: dict[str, Any] = field(default_factory=dict)  # step-specific objects (validation, benchmark, ...)
    versions: dict[str, str] = field(default_factory=dict)
    gptctl_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    created: str = ""
    host: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)  # validation/benchmark sit at the top level, where gates look for them
        return d

    def write(self, directory: str | os.PathLike) -> Path:
        """Write the manifest into `directory` (atomically: temp file + rename)."""
        if not self.created:
            self.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if not self.versions:
            self.versions = library_versions()
        if not self.host:
            self.host = {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "system": platform.system(),
            }
        path = Path(directory) / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        os.replace(tmp, path)
        return path


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    """Return the manifest in `directory` as a dict, or None when there is none."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not a readable gptctl manifest: {exc}", "re-run the step that wrote it") from exc


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that affect results (absent ones are left out)."""
    found = {}
    for name in _TRACKED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def sha256_file(path: str | os.PathLike, _chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | os.PathLike, *, ignore: tuple[str, ...] = (MANIFEST_NAME,)) -> str:
    """Content hash of a file, or of a directory (relative names + contents, sorted).

    The manifest itself is left out so a directory's hash does not depend on when it was written.
    """
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if not p.is_dir():
        raise BadInput(f"{p} does not exist", "check the path")
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        rel = f.relative_to(p).as_posix()
        if rel in ignore or rel.startswith("checkpoints/"):
            continue
        h.update(rel.encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def dir_size(path: str | os.PathLike) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
