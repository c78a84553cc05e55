"""ONNX Runtime session of an exported encoder (`--task feature-extraction`): every declared input fed.

optimum's encoder graphs declare what the architecture's forward takes: BERT's take `input_ids`,
`attention_mask` and `token_type_ids` (all-MiniLM-L6-v2: all three, int64 [batch, sequence]); others add
`position_ids` or drop `token_type_ids`. Feeding only input_ids and the mask, as the decoder session does,
fails with ORT's "Required inputs (['token_type_ids']) are missing". `encoder_feeds` builds the inputs a
caller does not give with the values the PyTorch model uses by default (segment 0, positions from 0), so
ONNX Runtime and PyTorch compute the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from gptctl.errors import BadInput

ENCODER_TASKS = ("feature-extraction",)
# Inputs `encoder_feeds` knows how to fill; any other declared input is named in the error.
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
# What ONNX Runtime says when the file itself is the problem, not the provider (as gptctl.runtime.session).


def is_encoder_task(task: str | None) -> bool:
    """Whether an export task makes an encoder graph (hidden states, no logits, no KV cache)."""
    return task in ENCODER_TASKS


def encoder_feeds(names: Iterable[str], input_ids: np.ndarray, attention_mask: Any = None) -> dict[str, np.ndarray]:
    """A feed for each of `names`: the ids, the mask (default all ones), token types 0, positions 0..seq-1.

    Raises:
        ValueError: a name this helper cannot fill (the graph needs an input gptctl does not know).
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, sequence], got shape {ids.shape}")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask is {mask.shape}, expected {ids.shape} (as input_ids)")
    values = {
        "input_ids": lambda: ids,
        "attention_mask": lambda: mask,
        "token_type_ids": lambda: np.zeros_like(ids),
        "position_ids": lambda: np.ascontiguousarray(
            np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape)
        ),
    }
    names = list(names)
    unknown = [n for n in names if n not in values]
    if unknown:
        raise ValueError(
            f"the encoder graph declares inputs gptctl cannot fill: {unknown} (known: {list(KNOWN_INPUTS)})"
        )
    return {n: values[n]() for n in names}


class OrtEncoder:
    """An encoder ONNX session: one forward pass over [batch, sequence] token ids, every declared input fed."""

    def __init__(self, session: Any, *, device: str = "cpu"):
        self.session = session
        self.device = device
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        if "input_ids" not in self.input_names:
            raise ValueError(f"an encoder graph takes input_ids; this one takes {self.input_names}")
        encoder_feeds(self.input_names, np.zeros((1, 1), dtype=np.int64))  # fail at open, not at the first call

    @classmethod
    def from_path(cls, path: str | Path, provider: str = "cpu", *, threads: int | None = None):
        """Open an exported encoder on `provider`; returns (OrtEncoder, session info).

        Raises:
            BadInput: the file is missing or not a readable ONNX model, or it declares inputs gptctl cannot fill.
            CheckFailed: the provider did not become the session's active provider (the reason says why).
        """
        from gptctl.runtime.providers import device_of, open_session

        session, info = open_session(path, provider, threads=threads, what="`gptctl export --task feature-extraction`")
        try:
            return cls(session, device=device_of(provider)), info
        except ValueError as exc:
            raise BadInput(f"{path}: {exc}", "export it with `gptctl export --task feature-extraction`") from exc

    def feeds(self, input_ids: np.ndarray, attention_mask: Any = None) -> dict[str, np.ndarray]:
        """What `forward` feeds the session: one array per declared input."""
        return encoder_feeds(self.input_names, input_ids, attention_mask)

    def forward(self, input_ids: np.ndarray, attention_mask: Any = None) -> dict[str, np.ndarray]:
        """Run once; returns the outputs by name (`last_hidden_state` [batch, sequence, hidden], ...)."""
        values = self.session.run(None, self.feeds(input_ids, attention_mask))
        return dict(zip(self.output_names, values, strict=True))


def graph_task(model_file: str | Path) -> str:
    """The export task a graph was made for, read from its inputs and outputs (for artifacts without a
    manifest): a graph with neither logits nor a KV cache is an encoder."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    if "logits" in outputs:
        return (
            "text-generation-with-past" if any(n.startswith("past_key_values") for n in inputs) else "text-generation"
        )
    return "feature-extraction"
