"""ONNX Runtime session of an exported decoder and gptctl's own generation loop over it.

`OrtCausalLM` drives a `text-generation-with-past` graph (inputs `input_ids`, `attention_mask`,
`position_ids`?, `past_key_values.N.key/value`; outputs `logits`, `present.N.key/value`): one prefill,
then one token per step with the KV cache fed back. With IO binding (always on CUDA) the cache stays
where ONNX Runtime put it and only the logits come back to the host.

Rows of different lengths share a batch left-padded: the attention mask is 0 over the padding and each
row's positions count its own tokens from 0. On every tiny architecture of tests/tiny_models.py (gpt2,
llama, qwen2, gpt_neox, opt; optimum-onnx 0.1.0, ORT 1.31, with and without `--optimize`) a padded row's
logits stayed within 2.4e-7 of the same row alone. Absolute-position models (gpt2, opt) need the per-row
positions; rotary ones (llama, qwen2, gpt_neox) gave the same tokens with shared positions too, as rotary
attention depends only on position differences. `gptctl.runtime.batch.check_batching` measures a graph.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
# What ONNX Runtime says when the file itself is the problem, not the provider.


def positions_from_mask(attention_mask: np.ndarray, seq: int) -> np.ndarray:
    """Position of each of the last `seq` columns of a left-padded mask: a row's first real token is 0.

    For an all-ones mask this is arange(past_len, past_len + seq), as without padding. Padding gets 0
    (any in-range value would do: it is masked out).
    """
    positions = np.cumsum(attention_mask, axis=1, dtype=np.int64) - 1
    return np.maximum(positions[:, -seq:], 0)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), both [len(rows), longest]: each row right-aligned, the mask 0 on padding."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        if len(row):
            ids[i, width - len(row) :] = row
            mask[i, width - len(row) :] = 1
    return ids, mask


def to_host(value: Any) -> np.ndarray:
    """A numpy array of an array or an OrtValue (copied to the host where it lives on a device)."""
    return value if isinstance(value, np.ndarray) else value.numpy()


class OrtCausalLM:
    """A decoder ONNX session: forward passes, batch-1 prefill, padded batched generation, greedy loop.

    With IO binding one binding object is kept and rebound each call (not thread-safe: one thread owns
    an `OrtCausalLM`, as the serving engine's loop does; ORT's own `run` path is thread-safe).
    """

    def __init__(self, session: Any, *, io_binding: bool | None = None, device: str = "cpu"):
        self.session = session
        self.device = device
        # Plain session.run on CPU, by measurement (benchmarks/bench_decode_binding.py, 2 shared cores, past
        # 64, two runs): a tiny-llama decode step took 0.165-0.171 ms with run and 0.198-0.224 ms bound (the
        # binding calls cost more than the cache copies they save); at SmolLM2-135M shapes bound/run was
        # 0.92 and 1.02 (63.6 vs 69.2 ms, 90.0 vs 88.3 ms): no gain beyond this machine's +-10% drift.
        self.io_binding = (device != "cpu") if io_binding is None else io_binding
        self._binding: Any = None
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

    @property
    def supports_padding(self) -> bool:
        """Whether padded rows can be masked at all (the graph takes an attention_mask). Whether the graph
        honours it exactly is measured by `gptctl.runtime.batch.check_batching`."""
        return self.has_attention_mask

    @classmethod
    def from_path(cls, path: str | Path, provider: str = "cpu", *, threads: int | None = None, **kwargs):
        """Open an exported decoder on `provider`; returns (OrtCausalLM, session info).

        Raises:
            BadInput: the file is missing, not a file, or not a readable ONNX model (truncated, corrupt).
            CheckFailed: the provider did not become the session's active provider (the reason says why).
        """
        from gptctl.runtime.providers import device_of, open_session

        session, info = open_session(path, provider, threads=threads, what="`gptctl export`")
        return cls(session, device=device_of(provider), **kwargs), info

    # -- one forward pass -------------------------------------------------------------------------
    def _feeds(
        self, input_ids: np.ndarray, past_len: int, attention_mask: Any, position_ids: Any
    ) -> dict[str, np.ndarray]:
        batch, seq = input_ids.shape
        feeds = {"input_ids": input_ids.astype(np.int64, copy=False)}
        if attention_mask is None:
            mask = np.ones((batch, past_len + seq), dtype=np.int64)
        else:
            mask = np.asarray(attention_mask, dtype=np.int64)
            if mask.shape != (batch, past_len + seq):
                raise ValueError(
                    f"attention_mask is {mask.shape}, expected (batch, past + seq) = {(batch, past_len + seq)}"
                )
            if not self.has_attention_mask and not mask.all():
                raise ValueError("this graph has no attention_mask input: padded rows cannot be masked")
        if self.has_attention_mask:
            feeds["attention_mask"] = mask
        if self.has_position_ids:
            pos = positions_from_mask(mask, seq) if position_ids is None else np.asarray(position_ids, dtype=np.int64)
            feeds["position_ids"] = np.ascontiguousarray(np.broadcast_to(pos, (batch, seq)))
        return feeds

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype) for _ in self.past_names]

    def forward(
        self,
        input_ids: np.ndarray,
        past: Sequence[Any] | None = None,
        past_len: int = 0,
        *,
        attention_mask: Any = None,
        position_ids: Any = None,
        **extra,
    ):
        """Run once; returns (outputs by name, presents). `past` holds arrays or OrtValues.

        `attention_mask` [batch, past_len + seq] (default all ones) masks padded columns; `position_ids`
        [batch, seq] default to the mask's running count (a row's first real token is position 0).
        """
        feeds = self._feeds(np.asarray(input_ids), past_len, attention_mask, position_ids)
        feeds.update(extra)
        if self.has_cache and past is None:
            past = self.empty_past(feeds["input_ids"].shape[0])
        if self.io_binding:
            return self._run_bound(feeds, past)
        if self.has_cache:
            feeds.update({n: to_host(p) for n, p in zip(self.past_names, past, strict=True)})
        values = self.session.run(None, feeds)
        named = dict(zip(self.output_names, values, strict=True))
        return named, [named[n] for n in self.present_names]

    def _run_bound(self, feeds: dict[str, np.ndarray], past: Sequence[Any] | None):
        import onnxruntime as ort

        # One binding for the session's life, rebound each call: inputs and outputs change shape every
        # decode step (optimum's graphs concatenate the cache), so no preallocated output can be reused,
        # but the presents of step t are bound as the pasts of step t+1 where they lie, without host copies.
        if self._binding is None:
            self._binding = self.session.io_binding()
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        dev = "cuda" if self.device == "cuda" else "cpu"
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), dev, 0))
        for name, value in zip(self.past_names, past or [], strict=True):
            if not isinstance(value, ort.OrtValue):
                value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), dev, 0)
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, dev)
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs()
        named = dict(zip(self.output_names, values, strict=True))
        # Logits are needed on the host for picking a token; the cache stays bound where it is.
        named = {k: (v if k in self.present_names else v.numpy()) for k, v in named.items()}
        return named, [named[n] for n in self.present_names]

    # -- prefill and batched generation -----------------------------------------------------------
    def prefill(self, token_ids: Sequence[int]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Batch-1 prefill of one prompt: (last position's logits [vocab] float32, presents in past_names
        order, each [1, kv_heads, len(token_ids), head_dim] on the host)."""
        if not self.has_cache:
            raise ValueError("prefill needs a graph with a KV cache (export --task text-generation-with-past)")
        ids = np.asarray([list(token_ids)], dtype=np.int64)
        if ids.shape[1] == 0:
            raise ValueError("prefill needs at least one token")
        out, presents = self.forward(ids)
        return np.asarray(out["logits"][0, -1], dtype=np.float32), [to_host(p) for p in presents]

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        sampling: Any = None,
        suppress_ids: Sequence[int] = (),
        stop_ids: Sequence[int] = (),
    ) -> list[list[int]]:
        """New tokens of each prompt, all rows in one left-padded, masked batch.

        Row i equals `generate([prompts[i]])`: each row has its own `Sampler(sampling)` (greedy when
        `sampling` is None). A row ends after `max_new_tokens` or after its first token in `stop_ids`
        (that token included, so a caller can tell a stop from the length limit).
        """
        from gptctl.runtime.sampling import Sampler, SamplingParams

        rows = [list(p) for p in prompts]
        if not rows or any(not r for r in rows):
            raise ValueError("generate needs at least one prompt, each of at least one token")
        samplers = [Sampler(sampling or SamplingParams()) for _ in rows]
        suppress = np.asarray(list(suppress_ids), dtype=np.int64)
        stops = set(int(s) for s in stop_ids)
        ids, mask = left_pad(rows)
        out, past = self.forward(ids, attention_mask=mask)
        new: list[list[int]] = [[] for _ in rows]
        for step in range(max_new_tokens):
            logits = np.asarray(out["logits"][:, -1, :], dtype=np.float32)
            if suppress.size:
                logits[:, suppress] = -np.inf
            picked = ids[:, -1].copy()  # finished rows feed their last token again; their output is ignored
            for r, sampler in enumerate(samplers):
                if new[r] and new[r][-1] in stops:
                    continue
                picked[r] = sampler.pick(logits[r])
                new[r].append(int(picked[r]))
            done = all(len(t) == max_new_tokens or t[-1] in stops for t in new)
            if done or step == max_new_tokens - 1:
                break
            mask = np.concatenate([mask, np.ones((len(rows), 1), dtype=np.int64)], axis=1)
            if self.has_cache:
                ids = picked[:, None]
                out, past = self.forward(ids, past, past_len=mask.shape[1] - 1, attention_mask=mask)
            else:
                ids = np.concatenate([ids, picked[:, None]], axis=1)
                out, _ = self.forward(ids, attention_mask=mask)
        return new

    # -- greedy (validation and bench) ------------------------------------------------------------
    def greedy(
        self,
        input_ids: np.ndarray,
        max_new_tokens: int,
        *,
        suppress_ids: Sequence[int] = (),
        timings: list[float] | None = None,
    ) -> np.ndarray:
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
