"""Model versions behind the service, and the zero-downtime swap between them.

A `ModelVersion` is one loaded artifact: its engine, tokenizer, context window and fingerprint (the
`system_fingerprint` of every response it serves). A `Deployment` holds the current version; each request
leases the version that is current when it starts and keeps it to its end, so no request sees two. A swap
loads the new version beside the old one, warms it with a canary prompt, switches new requests to it in one
step under a lock, and frees the old one when its last request ends. A version that fails to load or warm
leaves the old one serving.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput, CheckFailed, GptctlError
from gptctl.manifest import read_manifest

log = logging.getLogger(__name__)

CANARY_PROMPT = "Hello"
CANARY_TOKENS = 2


def resolve_artifact(path: str | Path) -> Path:
    """The export directory of `path`: an export's --output, or a run dir holding exactly one export step."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise BadInput(f"{root} is not a directory", "pass the --output directory of `gptctl export` or a run dir")
    if (root / "model.onnx").is_file():
        return root
    steps = sorted(
        d
        for d in root.iterdir()
        if d.is_dir() and (d / "model.onnx").is_file() and (read_manifest(d) or {}).get("step") == "export"
    )
    if len(steps) == 1:
        return steps[0]
    if not steps:
        raise BadInput(f"{root} has no model.onnx and no export step", "pass an export directory or a run dir with one")
    raise BadInput(
        f"{root} has {len(steps)} export steps: {', '.join(s.name for s in steps)}",
        f"pass one of them, e.g. {steps[0]}",
    )


def artifact_fingerprint(manifest: dict[str, Any]) -> str:
    """`fp_` + 12 hex of the hash over the manifest's output hashes (the graph files that ship)."""
    outputs = manifest.get("outputs") or {}
    hashes = sorted(f"{name}:{(info or {}).get('sha256', '')}" for name, info in outputs.items())
    if not hashes or not all(h.split(":", 1)[1] for h in hashes):
        raise BadInput("the artifact's gptctl.json records no output hashes", "re-export it with `gptctl export`")
    return "fp_" + hashlib.sha256("\n".join(hashes).encode()).hexdigest()[:12]


def context_window(artifact: Path) -> int:
    try:
        cfg = json.loads((artifact / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{artifact / 'config.json'} is missing or unreadable: {exc}") from exc
    cfg = {**(cfg.get("text_config") or {}), **cfg}
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if cfg.get(key):
            return int(cfg[key])
    raise BadInput(f"{artifact / 'config.json'} has no max_position_embeddings", "export the model again")


@dataclass
class LoadOptions:
    """How versions are loaded: the same for the first one and for every swap."""

    provider: str = "cpu"
    threads: int | None = None
    max_batch: int = 8
    max_queued: int = 64
    check_batching: bool = True
    require_validation: bool = True  # swaps always require it; the first load too unless turned off


@dataclass
class ModelVersion:
    """One loaded artifact (see the module docstring). `state`: loading, serving, draining, freed."""

    artifact: Path
    fingerprint: str
    engine: Any
    tokenizer: Any
    context_window: int
    stop_ids: tuple[int, ...]
    created: int = field(default_factory=lambda: int(time.time()))
    state: str = "loading"
    inflight: int = 0
    task: str = "text-generation"  # or "feature-extraction": an encoder serving /v1/embeddings


def load_version(artifact: str | Path, options: LoadOptions, observer: Any = None) -> ModelVersion:
    """Load, self-check and warm one artifact. Raises BadInput / CheckFailed with the reason."""
    path = resolve_artifact(artifact)
    manifest = read_manifest(path)
    if manifest is None:
        raise BadInput(f"{path} has no gptctl.json manifest", "serve a directory written by `gptctl export`")
    if options.require_validation and not (manifest.get("validation") or {}).get("passed"):
        raise CheckFailed(
            f"{path}: its manifest has no passing validation (validation.passed)",
            "serve an export whose validation passed",
        )
    fingerprint = artifact_fingerprint(manifest)
    window = context_window(path)
    tokenizer = _load_tokenizer(path)
    if (manifest.get("options") or {}).get("task") == "feature-extraction":
        from gptctl.serve.embeddings import load_encoder_engine

        engine = load_encoder_engine(path, manifest, tokenizer, window, options, fingerprint)
        version = ModelVersion(path, fingerprint, engine, tokenizer, window, (), task="feature-extraction")
        warm(version)
        return version
    from gptctl.runtime.session import OrtCausalLM
    from gptctl.serve.engine import Engine

    lm, _info = OrtCausalLM.from_path(path / "model.onnx", options.provider, threads=options.threads)
    engine = Engine(
        lm,
        context_window=window,
        max_batch=options.max_batch,
        max_queued=options.max_queued,
        check_batching=options.check_batching,
        observer=observer,
        name=fingerprint,
    )
    stop_ids = tuple(sorted(_stop_ids(path, tokenizer)))
    version = ModelVersion(path, fingerprint, engine, tokenizer, window, stop_ids)
    try:
        warm(version)
    except Exception:
        engine.stop()
        raise
    return version


def warm(version: ModelVersion) -> None:
    """Run a canary prompt through the engine: the version serves only once a request has come back."""
    ids = version.tokenizer(CANARY_PROMPT)["input_ids"] or [0]
    if version.task == "feature-extraction":
        import numpy as np

        vectors = version.engine.embed([ids])
        if not np.isfinite(vectors).all():
            version.engine.stop()
            raise CheckFailed(
                f"{version.artifact}: the canary embedding is not finite",
                "check that the artifact runs with `gptctl bench`",
            )
        return
    handle = version.engine.add_request(ids, CANARY_TOKENS)
    tokens = list(handle)
    if handle.finish_reason == "error" or (not tokens and handle.finish_reason != "stop"):
        raise CheckFailed(
            f"{version.artifact}: the canary request failed: {handle.error or handle.finish_reason}",
            "check that the artifact runs with `gptctl bench`",
        )


def _load_tokenizer(path: Path):
    from gptctl.serve.tokenizer import load_tokenizer

    try:
        return load_tokenizer(path)
    except Exception as exc:  # transformers raises OSError/ValueError/... for a missing or broken tokenizer
        raise BadInput(
            f"{path}: cannot load the tokenizer: {exc}", "serve a complete `gptctl export` directory"
        ) from exc


def _stop_ids(path: Path, tokenizer: Any) -> set[int]:
    """End-of-sequence ids: the tokenizer's and generation_config.json's (a list for chat models)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        gen = json.loads((path / "generation_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        gen = {}
    eos = gen.get("eos_token_id")
    ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return {int(i) for i in ids}


class SwapInProgress(GptctlError):
    """Another swap is loading a version."""


class Deployment:
    """The current version, the leases on it, swaps and draining (see the module docstring)."""

    def __init__(
        self,
        version: ModelVersion,
        options: LoadOptions,
        observer: Any = None,
        on_change: Callable[[Deployment], None] | None = None,
        loader: Callable[..., ModelVersion] = load_version,
    ):
        self.options = options
        self.observer = observer
        self.on_change = on_change or (lambda d: None)
        self._loader = loader
        self._lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._current = version
        self.loading: str | None = None  # the artifact a swap is loading
        self.retired: list[ModelVersion] = []  # draining versions, until their last request ends
        self.draining = False
        version.state = "serving"

    @property
    def current(self) -> ModelVersion:
        return self._current

    def acquire(self) -> ModelVersion:
        """The current version, held for one request until `release` (it is not freed before)."""
        with self._lock:
            version = self._current
            version.inflight += 1
        return version

    def release(self, version: ModelVersion) -> None:
        with self._lock:
            version.inflight -= 1
            free = version.state == "draining" and version.inflight == 0
        if free:
            self._free(version)

    @contextlib.contextmanager
    def lease(self) -> Iterator[ModelVersion]:
        version = self.acquire()
        try:
            yield version
        finally:
            self.release(version)

    def inflight(self) -> int:
        with self._lock:
            return self._current.inflight + sum(v.inflight for v in self.retired)

    def swap(self, artifact: str | Path) -> tuple[ModelVersion, ModelVersion]:
        """Load `artifact` beside the current version and switch to it; returns (old, new).

        Raises SwapInProgress, or the loader's BadInput/CheckFailed (the old version keeps serving).
        """
        if not self._swap_lock.acquire(blocking=False):
            raise SwapInProgress(f"a swap to {self.loading} is in progress", "wait for it to finish")
        try:
            self.loading = str(artifact)
            self.on_change(self)
            opts = LoadOptions(**{**self.options.__dict__, "require_validation": True})
            new = self._loader(artifact, opts, self.observer)
            with self._lock:
                old, self._current = self._current, new
                new.state, old.state = "serving", "draining"
                self.retired.append(old)
                free = old.inflight == 0
            log.info("swapped %s -> %s (%s)", old.fingerprint, new.fingerprint, new.artifact)
            if free:
                self._free(old)
            return old, new
        finally:
            self.loading = None
            self._swap_lock.release()
            self.on_change(self)

    def _free(self, version: ModelVersion) -> None:
        version.state = "freed"
        version.engine.stop()
        with self._lock:
            if version in self.retired:
                self.retired.remove(version)
        log.info("freed %s (%s)", version.fingerprint, version.artifact)
        self.on_change(self)

    def start_draining(self) -> None:
        """Refuse new requests (ready -> 503); in-flight ones finish."""
        self.draining = True
        self._current.engine.stop_accepting()
        self.on_change(self)

    def close(self) -> None:
        for version in [self._current, *self.retired]:
            version.engine.stop()
            version.state = "freed"
