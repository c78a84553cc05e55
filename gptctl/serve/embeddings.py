"""Embeddings of a `--task feature-extraction` artifact (an encoder such as all-MiniLM-L6-v2) for /v1/embeddings.

The hidden states are pooled as the model's own sentence-transformers config says: `modules.json` lists
the modules (Transformer, Pooling, Normalize) and `<Pooling path>/config.json` the pooling mode (mean,
cls, max, mean_sqrt_len). The config is read from the artifact, else from the source model directory the
export's manifest records (gptctl export does not copy it); without one, mean pooling over the mask, not
normalized (what sentence-transformers builds for a plain transformer). A request's inputs run as one
padded batch through `gptctl.runtime.encoder.OrtEncoder` (every declared input fed, as export validated);
the mask keeps padding out of the pooling, so an input's vector does not depend on its batch mates.

`EmbeddingEngine` has the interface `Deployment` and the metrics read from a decoder engine (stats, stop,
stop_accepting, batching), so versions, swaps, leases and draining work for encoders unchanged.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gptctl.errors import BadInput

log = logging.getLogger(__name__)

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")
_CONFIG_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
# Rows per forward pass: OpenAI takes up to 2048 inputs a request; 32 rows of MiniLM at 128 tokens is ~16 MB
# of activations.
ROWS_PER_PASS = 32


@dataclass(frozen=True)
class Pooling:
    """How hidden states become one vector per input, and where that was read."""

    mode: str = "mean"
    normalize: bool = False
    source: str = "default (no sentence-transformers config)"


def read_pooling(artifact: Path, manifest: dict[str, Any] | None = None) -> Pooling:
    """The pooling of the artifact's sentence-transformers config, else of the source model's, else mean."""
    source = ((manifest or {}).get("inputs") or {}).get("model", {}).get("path")
    for directory in (Path(artifact), Path(source) if source else None):
        if directory is not None and (directory / "modules.json").is_file():
            return _pooling_of(directory)
    return Pooling()


def _pooling_of(directory: Path) -> Pooling:
    try:
        modules = json.loads((directory / "modules.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{directory / 'modules.json'} is unreadable: {exc}", "copy it again from the model") from exc
    types = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
    normalize = "Normalize" in types
    if "Pooling" not in types:
        return Pooling("mean", normalize, f"{directory / 'modules.json'} (no Pooling module: mean)")
    config_file = directory / str(types["Pooling"].get("path") or "") / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(
            f"{config_file}: the Pooling module's config is missing or unreadable: {exc}",
            "copy the model's 1_Pooling/config.json beside its modules.json",
        ) from exc
    modes = [mode for key, mode in _CONFIG_KEYS.items() if config.get(key)]
    if len(modes) != 1:  # sentence-transformers concatenates several modes; gptctl serves one
        raise BadInput(
            f"{config_file}: pooling modes {modes or 'none'}; gptctl serves exactly one of {', '.join(POOLING_MODES)}",
            "set one pooling_mode_* to true",
        )
    return Pooling(modes[0], normalize, str(config_file))


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling) -> np.ndarray:
    """[batch, sequence, hidden] and its [batch, sequence] mask -> [batch, hidden] float32 vectors."""
    hidden = hidden.astype(np.float32, copy=False)
    m = mask.astype(np.float32)[:, :, None]
    if pooling.mode == "cls":
        out = hidden[:, 0]
    elif pooling.mode == "max":
        out = np.where(m > 0, hidden, np.finfo(np.float32).min).max(axis=1)
    else:
        counts = np.clip(m.sum(axis=1), 1e-9, None)  # sentence-transformers' clamp
        total = (hidden * m).sum(axis=1)
        out = total / (np.sqrt(counts) if pooling.mode == "mean_sqrt_len" else counts)
    if pooling.normalize:
        out = out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)  # torch's F.normalize eps
    return out.astype(np.float32)


class EmbeddingEngine:
    """One encoder session; `embed` runs a request's inputs in padded batches (one request at a time)."""

    batching = True
    batching_reason = "the inputs of a request run as one padded batch; padding is masked out of the pooling"

    def __init__(self, encoder: Any, pooling: Pooling, *, context_window: int, pad_id: int, name: str = ""):
        self.encoder = encoder
        self.pooling = pooling
        self.context_window = context_window
        self.pad_id = pad_id
        self.name = name
        self.max_batch = ROWS_PER_PASS
        self._lock = threading.Lock()  # one forward at a time: ORT's intra-op threads already use every core
        self._accepting = True
        self._running = 0
        self._steps = 0

    def embed(self, ids: list[list[int]]) -> np.ndarray:
        """One float32 vector per token-id list. Raises EngineStopped once the engine stops accepting."""
        from gptctl.serve.engine import EngineStopped

        if not self._accepting or self.encoder is None:
            raise EngineStopped(f"the engine of {self.name} is not accepting requests")
        out = []
        self._running += 1
        try:
            with self._lock:
                for start in range(0, len(ids), ROWS_PER_PASS):
                    out.append(self._forward(ids[start : start + ROWS_PER_PASS]))
                    self._steps += 1
        finally:
            self._running -= 1
        return np.concatenate(out)

    def _forward(self, rows: list[list[int]]) -> np.ndarray:
        width = max(len(r) for r in rows)
        batch = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(batch)
        for i, r in enumerate(rows):
            batch[i, : len(r)], mask[i, : len(r)] = r, 1
        hidden = self.encoder.forward(batch, mask)["last_hidden_state"]
        return pool(hidden, mask, self.pooling)

    def stats(self):
        from gptctl.serve.engine import EngineStats

        return EngineStats(
            running=self._running,
            waiting=0,
            steps=self._steps,
            batching=True,
            batching_reason=self.batching_reason,
            max_batch=self.max_batch,
        )

    def add_request(self, *args: Any, **kwargs: Any):
        raise BadInput(
            "this is an embedding model (feature-extraction): it serves /v1/embeddings",
            "serve a text-generation export for completions",
        )

    def stop_accepting(self) -> None:
        self._accepting = False

    def stop(self, timeout: float = 10.0) -> None:
        self._accepting = False
        with self._lock:
            self.encoder = None  # the session goes with its last reference


def load_encoder_engine(
    path: Path, manifest: dict[str, Any], tokenizer: Any, window: int, options: Any, name: str
) -> EmbeddingEngine:
    """The encoder session of an artifact, with its pooling read (see the module docstring)."""
    from gptctl.runtime.encoder import OrtEncoder

    pooling = read_pooling(path, manifest)
    encoder, _info = OrtEncoder.from_path(path / "model.onnx", options.provider, threads=options.threads)
    pad = getattr(tokenizer, "pad_token_id", None)  # any id does: padding is masked out
    log.info(
        "%s: embeddings pooled by %s%s (%s)",
        name,
        pooling.mode,
        ", normalized" if pooling.normalize else "",
        pooling.source,
    )
    return EmbeddingEngine(encoder, pooling, context_window=window, pad_id=0 if pad is None else int(pad), name=name)
