"""The serving engine: one thread owns the ONNX Runtime session and the running decode batch.

Knows nothing of HTTP (vLLM's split): `add_request(token_ids, ...)` returns a `RequestHandle` whose
tokens arrive as the engine produces them; `cancel` frees the row at the next step. Per-request state
lives in slots (llama.cpp's), one per batch row. Continuous batching: a new request is prefilled alone
(`OrtCausalLM.prefill`), then joins the running `DecodeBatch`; finished or cancelled rows leave before
the next step. Before each decode step every waiting request that has a free row is prefilled, up to
`prefill_budget` prompt tokens per step (vLLM's token budget, llama.cpp's n_batch): a request that arrives
while others decode waits for one step at most, not for one step per request ahead of it, and the stall
the running rows see stays bounded. At load `check_batching` compares batched greedy output with batch-1
output for prompts of different lengths; if they differ, batching is turned off (one row at a time) and the reason kept.
The check allows the graph's own rounding noise (int4 at accuracy_level 4 turns padding's float rounding
into ~0.5 logits), so a served greedy token is batch-1's except at near-ties closer than that noise.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptctl.errors import BadInput, GptctlError

log = logging.getLogger(__name__)

# Prompts of different lengths for the batching self-check (ids below 100: valid in any vocabulary).
_CHECK_PROMPTS = ((5, 17, 42), (9, 3, 27, 81, 11, 64, 2), (31, 7, 19, 5, 53, 12, 8, 44, 70, 6, 15, 90))


# Prompt tokens prefilled before one decode step (more wait for the next step); the first waiting request
# always goes. 1 = one prefill per decode step. Measured with bench_serve's TTFT scenario (4 clients, 4
# interleaved A/B runs): one per step gave p95 2.57-3.53x idle TTFT, up to 256 tokens per step 2.91-3.68x:
# requests admitted together finish together and come back together, so one prefill per step, which
# staggers them, queues less. Larger budgets help bursts that arrive while rows are decoding.
PREFILL_BUDGET = 1


class QueueFull(GptctlError):
    """The engine holds `max_batch + max_queued` requests already (the HTTP side answers 429)."""


class EngineStopped(GptctlError):
    """The engine no longer accepts requests (it is draining or stopped)."""


@dataclass
class Finished:
    """The last event of a request: why it ended ("stop", "length", "cancelled", "error")."""

    reason: str
    error: str | None = None


class RequestHandle:
    """One request's token stream. Iterate it (or `async for` it, when made with a loop) for token ids.

    After the stream ends, `finish_reason` says why; `cancel()` asks the engine to drop the request.
    """

    def __init__(self, rid: int, engine: Engine, prompt_len: int, loop: asyncio.AbstractEventLoop | None):
        self.id = rid
        self.prompt_len = prompt_len
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.created = time.perf_counter()
        self.first_token_at: float | None = None
        self._engine = engine
        self._loop = loop
        self._sync: queue.Queue | None = None if loop else queue.Queue()
        self._async: asyncio.Queue | None = asyncio.Queue() if loop else None

    def _push(self, event: Any) -> None:
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._async.put_nowait, event)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass
        else:
            self._sync.put(event)

    def _consume(self, event: Any) -> int | None:
        if isinstance(event, Finished):
            self.finish_reason, self.error = event.reason, event.error
            return None
        self.tokens.append(event)
        return event

    def __iter__(self) -> Iterator[int]:
        if self._sync is None:
            raise TypeError("this handle was made with an event loop: use `async for`")
        while self.finish_reason is None:
            token = self._consume(self._sync.get())
            if token is not None:
                yield token

    async def next_event(self, timeout: float | None = None) -> int | Finished:
        """The next token id or the Finished event; raises asyncio.TimeoutError after `timeout` seconds."""
        if self._async is None:
            raise TypeError("this handle was made without an event loop: iterate it")
        event = await asyncio.wait_for(self._async.get(), timeout)
        self._consume(event)
        return event

    def cancel(self) -> None:
        self._engine.cancel(self)


@dataclass
class _Slot:
    handle: RequestHandle
    prompt: list[int]
    max_tokens: int
    sampler: Any
    stop_ids: frozenset[int]
    emitted: int = 0
    last_token_at: float | None = None


@dataclass
class EngineStats:
    """A snapshot for /health/ready and /metrics."""

    running: int
    waiting: int
    steps: int
    batching: bool
    batching_reason: str
    max_batch: int
    finished: dict[str, int] = field(default_factory=dict)


class NullObserver:
    """What the engine reports as it runs; the HTTP side passes one that feeds Prometheus."""

    def step(self, rows: int) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def inter_token(self, seconds: float) -> None: ...
    def finished(self, reason: str) -> None: ...


class Engine:
    """Continuous batching over one `OrtCausalLM` (see the module docstring).

    `max_batch` rows decode together; up to `max_queued` more wait for a row; beyond that
    `add_request` raises QueueFull. `context_window` (the config's max_position_embeddings) bounds
    prompt + generated tokens; `prefill_budget` the prompt tokens prefilled before one decode step.
    """

    def __init__(
        self,
        lm: Any,
        *,
        context_window: int,
        max_batch: int = 8,
        max_queued: int = 64,
        check_batching: bool = True,
        observer: Any = None,
        name: str = "engine",
        prefill_budget: int = PREFILL_BUDGET,
    ):
        if not getattr(lm, "has_cache", False):
            raise BadInput(
                "gptctl serve needs a graph with a KV cache",
                "export with --task text-generation-with-past (the default)",
            )
        if max_batch < 1 or max_queued < 0:
            raise BadInput(f"--max-batch must be >= 1 and --max-queued >= 0 (got {max_batch}, {max_queued})")
        if prefill_budget < 1:
            raise BadInput(f"the prefill budget must be >= 1 token, not {prefill_budget}")
        self.lm = lm
        self.prefill_budget = prefill_budget
        self.context_window = context_window
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.observer = observer or NullObserver()
        self.batching, self.batching_reason = self._check(check_batching)
        from gptctl.runtime.batch import DecodeBatch

        self._batch = DecodeBatch(lm, max_batch if self.batching else 1)
        self._slots: dict[int, _Slot] = {}
        self._waiting: deque[_Slot] = deque()
        self._cancelled: set[int] = set()
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._accepting = True
        self._stop = False
        self.steps = 0
        self._finished: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name=f"gptctl-{name}", daemon=True)
        self._thread.start()

    # -- the batching self-check ------------------------------------------------------------------
    def _check(self, enabled: bool) -> tuple[bool, str]:
        if self.max_batch == 1:
            return False, "--max-batch 1"
        if not enabled:
            return False, "the batching self-check was skipped: one row at a time"
        from gptctl.runtime.batch import check_batching

        prompts = [list(p) for p in _CHECK_PROMPTS if len(p) + 4 <= self.context_window] or [[1], [1, 2]]
        started = time.perf_counter()
        try:
            ok, reason = check_batching(self.lm, prompts, steps=4)
        except Exception as exc:  # a graph that cannot batch at all fails here, not on the first request
            ok, reason = False, f"the batching self-check raised {type(exc).__name__}: {exc}"
        log.info(
            "batching self-check (%.0f ms): %s -- %s",
            1000 * (time.perf_counter() - started),
            "on" if ok else "OFF",
            reason,
        )
        return ok, reason

    # -- the client side (any thread) -------------------------------------------------------------
    def add_request(
        self,
        token_ids: Sequence[int],
        max_tokens: int,
        sampling: Any = None,
        stop_ids: Sequence[int] = (),
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> RequestHandle:
        """Queue a request; returns its handle. Raises QueueFull, EngineStopped, or BadInput (empty prompt,
        prompt + max_tokens past the context window, max_tokens < 1)."""
        from gptctl.runtime.sampling import Sampler, SamplingParams

        prompt = [int(t) for t in token_ids]
        if not prompt:
            raise BadInput("the prompt has no tokens")
        if max_tokens < 1:
            raise BadInput(f"max_tokens must be >= 1, not {max_tokens}")
        if len(prompt) + max_tokens > self.context_window:
            raise BadInput(
                f"{len(prompt)} prompt tokens + {max_tokens} new tokens exceed the context window "
                f"of {self.context_window} tokens"
            )
        with self._cond:
            if not self._accepting:
                raise EngineStopped("the engine is draining and accepts no new requests")
            if len(self._slots) + len(self._waiting) >= self.max_batch + self.max_queued:
                raise QueueFull(f"{len(self._slots)} requests running and {len(self._waiting)} waiting (the limit)")
            handle = RequestHandle(next(self._ids), self, len(prompt), loop)
            slot = _Slot(handle, prompt, max_tokens, Sampler(sampling or SamplingParams()), frozenset(stop_ids))
            self._waiting.append(slot)
            self._cond.notify()
        return handle

    def cancel(self, handle: RequestHandle) -> None:
        """Drop a request: a waiting one at once, a running one before the next decode step."""
        with self._cond:
            self._cancelled.add(handle.id)
            self._cond.notify()

    def stats(self) -> EngineStats:
        with self._cond:
            return EngineStats(
                len(self._slots),
                len(self._waiting),
                self.steps,
                self.batching,
                self.batching_reason,
                self._batch.max_rows,
                dict(self._finished),
            )

    def stop_accepting(self) -> None:
        with self._cond:
            self._accepting = False

    def idle(self) -> bool:
        with self._cond:
            return not self._slots and not self._waiting

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (requests still in flight end with "cancelled") and drop the session."""
        with self._cond:
            self._accepting = False
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    # -- the engine thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._waiting and not self._slots and not self._cancelled:
                    self._cond.wait()
                if self._stop:
                    break
                cancelled, self._cancelled = self._cancelled, set()
                self._drop_cancelled(cancelled)
                admitted = self._take_admissions()
            for slot in admitted:
                self._admit(slot)
            if len(self._batch):
                self._step()
        self._shutdown()

    def _take_admissions(self) -> list[_Slot]:
        """The waiting requests to prefill before the next decode step (the caller holds the lock): in
        arrival order while rows are free and their prompts fit `prefill_budget` tokens; the first always
        goes, so a prompt longer than the budget is prefilled alone in a step of its own."""
        admitted: list[_Slot] = []
        tokens = 0
        while self._waiting and len(self._slots) < self._batch.max_rows:
            slot = self._waiting[0]
            if admitted and tokens + len(slot.prompt) > self.prefill_budget:
                break
            self._waiting.popleft()
            self._slots[slot.handle.id] = slot  # counted as running from here: its prefill holds a row
            admitted.append(slot)
            tokens += len(slot.prompt)
        return admitted

    def _drop_cancelled(self, ids: set[int]) -> None:
        for slot in [s for s in self._waiting if s.handle.id in ids]:
            self._waiting.remove(slot)
            self._finish(slot, "cancelled", in_batch=False)
        for rid in ids & set(self._slots):
            self._finish(self._slots[rid], "cancelled")

    def _admit(self, slot: _Slot) -> None:
        try:
            logits, presents = self.lm.prefill(slot.prompt)
        except Exception as exc:
            log.exception("prefill failed")
            self._finish(slot, "error", in_batch=False, error=f"prefill failed: {exc}")
            return
        token = slot.sampler.pick(logits)
        if self._emit(slot, token):
            self._batch.join(slot.handle.id, presents, token)

    def _step(self) -> None:
        self.observer.step(len(self._batch))
        try:
            logits = self._batch.step()
        except Exception as exc:  # fail the rows, keep the engine
            log.exception("decode step failed")
            for rid in list(self._batch.keys()):
                self._finish(self._slots[rid], "error", error=f"decode step failed: {exc}")
            return
        self.steps += 1
        for rid, row in logits.items():
            slot = self._slots[rid]
            token = slot.sampler.pick(row)
            if self._emit(slot, token):
                self._batch.set_token(rid, token)

    def _emit(self, slot: _Slot, token: int) -> bool:
        """Hand one token to the request; False when the request has finished (it is then out of the batch)."""
        if token in slot.stop_ids:
            self._finish(slot, "stop", in_batch=slot.handle.id in self._batch.keys())
            return False
        now = time.perf_counter()
        if slot.last_token_at is None:
            slot.handle.first_token_at = now
            self.observer.first_token(now - slot.handle.created)
        else:
            self.observer.inter_token(now - slot.last_token_at)
        slot.last_token_at = now
        slot.handle._push(token)
        slot.emitted += 1
        if slot.emitted >= slot.max_tokens or len(slot.prompt) + slot.emitted >= self.context_window:
            self._finish(slot, "length", in_batch=slot.handle.id in self._batch.keys())
            return False
        return True

    def _finish(self, slot: _Slot, reason: str, *, in_batch: bool = True, error: str | None = None) -> None:
        rid = slot.handle.id
        if in_batch and rid in self._batch.keys():
            self._batch.leave(rid)
        with self._cond:
            self._slots.pop(rid, None)
            self._finished[reason] = self._finished.get(reason, 0) + 1
        self.observer.finished(reason)
        slot.handle._push(Finished(reason, error))

    def _shutdown(self) -> None:
        with self._cond:
            slots = list(self._slots.values()) + list(self._waiting)
            self._waiting.clear()
        for slot in slots:
            self._finish(slot, "cancelled")
        self._batch = None
        self.lm = None
