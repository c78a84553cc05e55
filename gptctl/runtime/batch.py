"""The running decode batch of a continuous-batching engine, and the self-check that says whether a graph
can batch rows of different lengths exactly.

Each request is prefilled alone (`OrtCausalLM.prefill`) and joins the batch with its cache; the batch
then advances every row by one token per `step`. Caches of different lengths share one tensor per past
input, zero-padded on the left to the longest and masked out by the attention mask; each row's position
is its own token count, so a row decodes as it would alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from gptctl.runtime.session import OrtCausalLM, left_pad, to_host

Rows = tuple[list[list[int]], list[list[np.ndarray]]]  # per row: tokens, and the logits each came from


def _left_pad_cache(array: np.ndarray, width: int) -> np.ndarray:
    missing = width - array.shape[2]
    if missing == 0:
        return array
    pad = np.zeros(array.shape[:2] + (missing,) + array.shape[3:], dtype=array.dtype)
    return np.concatenate([pad, array], axis=2)


class DecodeBatch:
    """Rows (keyed by the caller) decoding together: join after prefill, step, set_token, leave.

    Protocol: `join(key, presents, first_token)`; then repeatedly `step()` -> logits per key, and for each
    row either `set_token(key, chosen)` or `leave(key)` before the next `step()`. The cache of the last
    step stays as ONNX Runtime returned it (on the device under CUDA); join and leave rebuild it on the
    host, once per event rather than per token.
    """

    def __init__(self, lm: OrtCausalLM, max_rows: int):
        if not lm.has_cache:
            raise ValueError("DecodeBatch needs a graph with a KV cache (export --task text-generation-with-past)")
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, not {max_rows}")
        self.lm = lm
        self.max_rows = max_rows
        self._keys: list[Hashable] = []
        self._last = np.zeros(0, dtype=np.int64)  # the token each row feeds next step
        self._lengths = np.zeros(0, dtype=np.int64)  # real tokens in each row's cache = that token's position
        self._mask = np.zeros((0, 0), dtype=np.int64)  # [rows, cache width]: 0 over left padding
        self._past: list[Any] = []  # one [rows, kv_heads, width, head_dim] per past input (arrays or OrtValues)
        self._waiting: set[Hashable] = set()  # rows whose next token has not been set since the last step

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self) -> list:
        return list(self._keys)

    @property
    def width(self) -> int:
        """Cache length every row is padded to."""
        return self._mask.shape[1]

    def length(self, key: Hashable) -> int:
        """Tokens in `key`'s cache (its prompt plus the tokens it has fed so far)."""
        return int(self._lengths[self._index(key)])

    def _index(self, key: Hashable) -> int:
        try:
            return self._keys.index(key)
        except ValueError:
            raise KeyError(f"no row {key!r} in the batch") from None

    def _host_past(self) -> list[np.ndarray]:
        if not self._past:
            return [
                np.zeros((0, self.lm.kv_heads, 0, self.lm.head_dim), dtype=self.lm.kv_dtype) for _ in self.lm.past_names
            ]
        return [to_host(p) for p in self._past]

    def join(self, key: Hashable, presents: list[np.ndarray], last_token: int) -> None:
        """Add a row prefilled alone: `presents` from `lm.prefill`, `last_token` the token it feeds next."""
        if key in self._keys:
            raise ValueError(f"row {key!r} is already in the batch")
        if len(self._keys) >= self.max_rows:
            raise ValueError(f"the batch is full ({self.max_rows} rows): a row must leave first")
        if len(presents) != len(self.lm.past_names):
            raise ValueError(f"{len(presents)} present arrays, the graph has {len(self.lm.past_names)} past inputs")
        arrays = [np.asarray(to_host(p)) for p in presents]
        length = arrays[0].shape[2]
        expected = (1, self.lm.kv_heads, length, self.lm.head_dim)
        bad = [a.shape for a in arrays if a.shape != expected]
        if bad or length < 1:
            raise ValueError(f"presents must each be {expected} (from lm.prefill), got {bad[:1] or [arrays[0].shape]}")
        width = max(self.width, length)
        self._past = [
            np.concatenate([_left_pad_cache(old, width), _left_pad_cache(new.astype(old.dtype), width)])
            for old, new in zip(self._host_past(), arrays, strict=True)
        ]
        row_mask = np.zeros((1, width), dtype=np.int64)
        row_mask[0, width - length :] = 1
        self._mask = np.concatenate([np.pad(self._mask, ((0, 0), (width - self.width, 0))), row_mask])
        self._keys.append(key)
        self._last = np.append(self._last, np.int64(last_token))
        self._lengths = np.append(self._lengths, np.int64(length))

    def leave(self, key: Hashable) -> None:
        """Remove a finished or cancelled row; the batch compacts (rows and padding columns nobody needs)."""
        index = self._index(key)
        self._keys.pop(index)
        self._waiting.discard(key)
        keep = [i for i in range(len(self._keys) + 1) if i != index]
        self._last, self._lengths, mask = self._last[keep], self._lengths[keep], self._mask[keep]
        # Columns that are padding in every remaining row go: a long row leaving shrinks the cache.
        start = int(mask.shape[1] - self._lengths.max()) if len(keep) else mask.shape[1]
        self._mask = mask[:, start:]
        self._past = [p[keep][:, :, start:] for p in self._host_past()] if keep else []

    def set_token(self, key: Hashable, token: int) -> None:
        """The token chosen for `key` from `step()`'s logits; it is fed at the next step."""
        index = self._index(key)
        self._last[index] = token
        self._waiting.discard(key)

    def step(self) -> dict[Hashable, np.ndarray]:
        """One decode step over every row; returns each row's next-token logits [vocab] (float32)."""
        if not self._keys:
            return {}
        if self._waiting:
            raise ValueError(
                f"rows without a token since the last step: {sorted(map(repr, self._waiting))[:5]}; "
                "call set_token or leave for each"
            )
        rows = len(self._keys)
        mask = np.concatenate([self._mask, np.ones((rows, 1), dtype=np.int64)], axis=1)
        # The presents of the last step are fed back as ORT returned them (OrtValues under IO binding).
        out, presents = self.lm.forward(
            self._last[:, None],
            self._past,
            past_len=self.width,
            attention_mask=mask,
            position_ids=self._lengths[:, None],
        )
        self._past, self._mask = presents, mask
        self._lengths = self._lengths + 1
        self._waiting = set(self._keys)
        logits = np.asarray(out["logits"][:, -1, :], dtype=np.float32)
        return {key: logits[i] for i, key in enumerate(self._keys)}


def _alone(lm: OrtCausalLM, prompt: Sequence[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    """Batch-1 greedy without padding: the reference a batched row must match (tokens, logits per token)."""
    logits, past = lm.prefill(prompt)
    tokens, seen = [], [logits]
    for _ in range(steps - 1):
        tokens.append(int(logits.argmax()))
        out, past = lm.forward(np.array([[tokens[-1]]]), past, past_len=len(prompt) + len(tokens) - 1)
        logits = np.asarray(out["logits"][0, -1], dtype=np.float32)
        seen.append(logits)
    tokens.append(int(logits.argmax()))
    return tokens, seen


def _rounding_noise(lm: OrtCausalLM, prompt: Sequence[int], want: tuple[list[int], list[np.ndarray]]) -> float:
    """How far the row alone moves when every value of its prefill cache moves by one ulp (then fed its
    own greedy tokens): the graph's sensitivity to float rounding, which is all that padding changes.

    A graph of continuous arithmetic moves by rounding (fp32 SmolLM2-135M: 3-5e-5); one that quantizes
    activations (MatMulNBits accuracy_level 4 rounds each block to int8 on CPU) amplifies one ulp into
    whole rounding steps (int4 SmolLM2-135M: 0.4-0.9)."""
    _, past = lm.prefill(prompt)
    past = [np.nextafter(p, np.inf).astype(p.dtype) for p in past]
    worst = 0.0
    for t, token in enumerate(want[0][:-1]):
        out, past = lm.forward(np.array([[token]]), past, past_len=len(prompt) + t)
        worst = max(worst, float(np.abs(np.asarray(out["logits"][0, -1], np.float32) - want[1][t + 1]).max()))
    return worst


def _staggered(lm: OrtCausalLM, prompts: Sequence[Sequence[int]], steps: int) -> Rows:
    """Greedy through a DecodeBatch: row i joins after i steps of the others, each leaves when done."""
    batch = DecodeBatch(lm, len(prompts))
    tokens: list[list[int]] = [[] for _ in prompts]
    seen: list[list[np.ndarray]] = [[] for _ in prompts]
    pending = list(range(len(prompts)))
    while pending or len(batch):
        if pending:
            i = pending.pop(0)
            logits, presents = lm.prefill(prompts[i])
            seen[i].append(logits)
            tokens[i].append(int(logits.argmax()))
            batch.join(i, presents, tokens[i][-1])
        for i in [k for k in batch.keys() if len(tokens[k]) >= steps]:
            batch.leave(i)
        for i, logits in batch.step().items():
            seen[i].append(logits)
            tokens[i].append(int(logits.argmax()))
            batch.set_token(i, tokens[i][-1])
    return tokens, seen


def _compare(
    name: str, row: int, got: tuple[list[int], list[np.ndarray]], want: tuple[list[int], list[np.ndarray]], atol: float
) -> tuple[str | None, float, str | None]:
    """(problem, largest logit difference, near-tie) of a batched row against the row alone, step by step.

    Logits must stay within `atol`; a token may then differ only where the row alone had its top two logits
    within 2 x atol of each other (a near-tie): the rows' continuations diverge there, so the comparison of
    this row stops at that token and the tie is reported instead of failing."""
    worst = 0.0
    for t, (a, b) in enumerate(zip(got[1], want[1], strict=True)):
        diff = float(np.abs(a - b).max())
        if not diff <= atol:
            return (
                f"{name}: row {row} step {t} logits differ by {diff:.2e} (> {atol:.2e}) from the row alone",
                diff,
                None,
            )
        worst = max(worst, diff)
        if got[0][t] != want[0][t]:
            top = np.sort(b)[-2:]
            gap = float(top[1] - top[0])
            tie = f"{name} row {row} token {t}: {got[0][t]} batched, {want[0][t]} alone (top-2 gap {gap:.2e})"
            return None, worst, tie
    return None, worst, None


def _padded(lm: OrtCausalLM, rows: list[list[int]], steps: int) -> Rows:
    """Greedy of all rows in one left-padded batch (as `generate` runs it), keeping each step's logits."""
    ids, mask = left_pad(rows)
    out, past = lm.forward(ids, attention_mask=mask)
    tokens: list[list[int]] = [[] for _ in rows]
    seen: list[list[np.ndarray]] = [[] for _ in rows]
    for step in range(steps):
        logits = np.asarray(out["logits"][:, -1, :], dtype=np.float32)
        for i in range(len(rows)):
            seen[i].append(logits[i])
            tokens[i].append(int(logits[i].argmax()))
        if step < steps - 1:
            mask = np.concatenate([mask, np.ones((len(rows), 1), dtype=np.int64)], axis=1)
            nxt = np.array([[t[-1]] for t in tokens], dtype=np.int64)
            out, past = lm.forward(nxt, past, past_len=mask.shape[1] - 1, attention_mask=mask)
    return tokens, seen


# Batched logits may differ from the row alone by this many times the measured rounding noise. On int4
# SmolLM2-135M (accuracy_level 4) padded rows were 1.1-1.3x the noise (0.5-1.2 logits; tokens the same),
# while an ignored mask or shared positions were 12x and more (11-38 logits, tokens wrong within 2 steps).
NOISE_FACTOR = 4.0


def check_batching(
    lm: OrtCausalLM, prompts: Sequence[Sequence[int]], *, steps: int = 8, atol: float | None = None
) -> tuple[bool, str]:
    """Whether `lm` batches rows of different lengths as it runs them alone: greedy of each prompt alone
    against one left-padded batch (`generate`'s path) and against a DecodeBatch whose rows join and leave
    at different steps.

    Returns (ok, reason): tokens equal (but at near-ties, see `_compare`) and logits within the tolerance,
    the larger of `atol` (default 1e-4, fp16 graphs 2e-2) and NOISE_FACTOR x the graph's own rounding
    noise (`_rounding_noise`).
    Padding only reorders float sums (masked columns add exact zeros), which a graph that quantizes its
    activations amplifies to tenths of a logit; a masking or position bug moves logits by far more. So a
    batched row picks the token it would alone except where its top two logits are closer than that noise,
    the same ties the graph's quantization already resolves arbitrarily. A serving engine turns batching
    off when ok is False. Raises ValueError unless there are at least two prompts of different lengths
    (else nothing is padded and the check proves nothing).
    """
    if not lm.supports_padding:
        return False, "the graph has no attention_mask input: padded rows cannot be masked"
    if not lm.has_cache:
        return False, "the graph has no KV cache: rows cannot join a running batch"
    if atol is None:
        # fp16 rounds: the tiny fp16 llama's padded rows were 1.2e-4 off (fp32: 2.4e-7), and fp16 logits are
        # spaced 2**-6 = 0.016 apart at the magnitudes (16-32) of real models' top logits.
        atol = 2e-2 if lm.kv_dtype == np.float16 else 1e-4
    rows = [list(p) for p in prompts]
    if len(rows) < 2 or len({len(r) for r in rows}) < 2:
        raise ValueError("check_batching needs at least two prompts of different lengths")
    alone = [_alone(lm, r, steps) for r in rows]
    noise = max(_rounding_noise(lm, r, want) for r, want in zip(rows, alone, strict=True))
    tol = max(atol, NOISE_FACTOR * noise)
    runs = (("padded batch", _padded(lm, rows, steps)), ("DecodeBatch", _staggered(lm, rows, steps)))
    worst, ties = 0.0, []
    for name, (tokens, seen) in runs:
        for i, want in enumerate(alone):
            problem, diff, tie = _compare(name, i, (tokens[i], seen[i]), want, tol)
            if problem:
                return False, f"{problem}; the graph's rounding noise is {noise:.2e}"
            worst = max(worst, diff)
            ties += [tie] if tie else []
    tied = f"; {len(ties)} near-tie(s) resolved otherwise: {'; '.join(ties)}" if ties else ""
    return True, (
        f"{len(rows)} rows of lengths {sorted(len(r) for r in rows)}, {steps} tokens each: "
        f"same tokens as alone{' but for near-ties' if ties else ''}, "
        f"logits within {worst:.2e} (tolerance {tol:.2e}: the graph's rounding noise is {noise:.2e}){tied}"
    )
