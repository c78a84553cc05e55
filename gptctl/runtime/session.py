"""ONNX Runtime session of an exported decoder and gptctl's own generation loop over it.

`OrtCausalLM` drives a `text-generation-with-past` graph (inputs `input_ids`, `attention_mask`,
`position_ids`?, `past_key_values.N.key/value`; outputs `logits`, `present.N.key/value`): one prefill,
then one token per step with the KV cache fed back. With IO binding (always on CUDA) the cache stays
where ONNX Runtime put it and only the last logits come back to the host.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OrtCausalLM:
    """A decoder ONNX session with greedy generation (batch >= 1, no padding)."""

    def __init__(self, session: Any, *, io_binding: bool | None = None, device: str = "cpu"):
        self.session = session
        self.device = device
        self.io_binding = (device != "cpu") if io_binding is None else io_binding
        inputs = session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in session.get_outputs()]
        self.past_inputs = [i for i in inputs if i.name.startswith("past_key_values")]
        self.past_names = [i.name for i in self.past_inputs]
        self.present_names = [n.replace("past_key_values", "present") for n in self.past_names]
        missing = [n for n in self.present_names if n not in self.output_names]
        if missing:
            raise ValueError(f"graph has past inputs without matching present outputs: {missing[:3]}")
        self.has_cache = bool(self.past_names)
        self.has_position_ids = "position_ids" in self.input_names
        self.has_attention_mask = "attention_mask" in self.input_names
        if self.has_cache:
            shape = self.past_inputs[0].shape  # [batch, heads, past_sequence, head_dim]
            self.kv_heads, self.head_dim = int(shape[1]), int(shape[3])
            self.kv_dtype = _NP_TYPES.get(self.past_inputs[0].type, np.float32)

    @classmethod
    def from_path(cls, path: str | Path, provider: str = "cpu", *, threads: int | None = None, **kwargs):
        from gptctl.runtime.providers import create_session

        session, info = create_session(str(path), provider, threads=threads)
        if session is None:
            raise RuntimeError(info["reason"])
        return cls(session, device="cuda" if provider in ("cuda", "tensorrt") else "cpu", **kwargs), info

    # -- one forward pass -------------------------------------------------------------------------
    def _feeds(self, input_ids: np.ndarray, past_len: int) -> dict[str, np.ndarray]:
        batch, seq = input_ids.shape
        feeds = {"input_ids": input_ids.astype(np.int64, copy=False)}
        if self.has_attention_mask:
            feeds["attention_mask"] = np.ones((batch, past_len + seq), dtype=np.int64)
        if self.has_position_ids:
            feeds["position_ids"] = np.broadcast_to(np.arange(past_len, past_len + seq, dtype=np.int64), (batch, seq)).copy()
        return feeds

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype) for _ in self.past_names]

    def forward(self, input_ids: np.ndarray, past: Sequence[Any] | None = None, past_len: int = 0, **extra):
        """Run once; returns (outputs by name, presents). `past` holds arrays or OrtValues."""
        feeds = self._feeds(np.asarray(input_ids), past_len)
        feeds.update(extra)
        if self.has_cache and past is None:
            past = self.empty_past(feeds["input_ids"].shape[0])
        if self.io_binding:
            return self._run_bound(feeds, past)
        if self.has_cache:
            feeds.update({n: (p.numpy() if hasattr(p, "numpy") and not isinstance(p, np.ndarray) else p)
                          for n, p in zip(self.past_names, past)})
        values = self.session.run(None, feeds)
        named = dict(zip(self.output_names, values))
        return named, [named[n] for n in self.present_names]

    def _run_bound(self, feeds: dict[str, np.ndarray], past: Sequence[Any] | None):
        import onnxruntime as ort

        binding = self.session.io_binding()
        dev = "cuda" if self.device == "cuda" else "cpu"
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), dev, 0))
        for name, value in zip(self.past_names, past or []):
            if not isinstance(value, ort.OrtValue):
                value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), dev, 0)
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, dev)
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs()
        named = dict(zip(self.output_names, values))
        # Logits are needed on the host for argmax; the cache stays bound where it is.
        named = {k: (v if k in self.present_names else v.numpy()) for k, v in named.items()}
        return named, [named[n] for n in self.present_names]

    # -- generation -------------------------------------------------------------------------------
    def greedy(self, input_ids: np.ndarray, max_new_tokens: int, *, suppress_ids: Sequence[int] = (),
               timings: list[float] | None = None) -> np.ndarray:
        """Greedy generation of exactly `max_new_tokens` tokens (suppressed ids are never chosen).

        When `timings` is a list, the perf_counter time after each generated token is appended.
        """
        ids = np.asarray(input_ids, dtype=np.int64)
        suppress = np.asarray(list(suppress_ids), dtype=np.int64)
        new: list[np.ndarray] = []
        if not self.has_cache:
            seq = ids
            for _ in range(max_new_tokens):
                out, _ = self.forward(seq)
                nxt = self._pick(out["logits"][:, -1, :], suppress)
                new.append(nxt)
                seq = np.concatenate([seq, nxt[:, None]], axis=1)
                if timings is not None:
                    timings.append(time.perf_counter())
            return np.stack(new, axis=1)
        out, past = self.forward(ids)
        length = ids.shape[1]
        for step in range(max_new_tokens):
            nxt = self._pick(out["logits"][:, -1, :], suppress)
            new.append(nxt)
            if timings is not None:
                timings.append(time.perf_counter())
            if step == max_new_tokens - 1:
                break
            out, past = self.forward(nxt[:, None], past, past_len=length)
            length += 1
        return np.stack(new, axis=1)

    @staticmethod
    def _pick(logits: np.ndarray, suppress: np.ndarray) -> np.ndarray:
        if suppress.size:
            logits = logits.copy()
            logits[:, suppress] = -np.inf
        return logits.argmax(-1).astype(np.int64)
