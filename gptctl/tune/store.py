"""Step outputs shared by every trial of a study: DIR/cache/KEY/, KEY from the step's fingerprint.

The runner's fingerprint covers the step's kind, method and options, the content hash of every input
(an upstream step enters as its own fingerprint and output hash), its sources and gptctl's version; the
key adds the installed versions of the libraries that change results (torch, transformers, peft,
onnxruntime, ...), so a store kept across an upgrade never hands back an output the new versions would
not make. Two trials with the same prune settings therefore prune once, and a trial never gets the
output of a step whose inputs differ (the content hash is part of the key, not the step's name).

A trial's step folder becomes a link to the stored folder; the first trial to make an output moves it
into the store (a rename: same filesystem) and leaves the link behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from gptctl.manifest import library_versions


class SharedStore:
    """The runner's `StepStore` for a study (see gptctl.recipe.runner.StepStore)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._versions = json.dumps(library_versions(), sort_keys=True)

    def key(self, fingerprint: str) -> str:
        return hashlib.sha256(f"{fingerprint}\0{self._versions}".encode()).hexdigest()[:40]

    def fetch(self, fingerprint: str) -> Path | None:
        path = self.root / self.key(fingerprint)
        return path if (path / "gptctl.json").is_file() else None

    def put(self, fingerprint: str, out: Path) -> None:
        out = Path(out)
        if out.is_symlink() or not out.is_dir():
            return
        target = self.root / self.key(fingerprint)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(out, target)  # atomic; fails when a parallel trial stored the same step first
        except OSError:
            return  # keep this trial's own copy where it is: both have the same inputs and options
        out.symlink_to(target.resolve(), target_is_directory=True)
