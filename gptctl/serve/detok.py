"""Incremental detokenization with stop strings, in the HTTP worker (the engine deals in token ids).

Text is released only when it is final: a token that ends inside a multi-byte character decodes to
U+FFFD until the next token completes it, and text that could still become a stop string is held back.
When a stop string appears, the text is cut before it and the stream ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TextStream:
    """Feed token ids with `push`; it returns the newly final text. `stopped` once a stop string is seen.

    Decoding follows text-generation-inference's `decode_token`: the new tokens are decoded together with
    the few before them (so byte-level BPE and sentencepiece spaces come out as in a full decode) and the
    text of those few is subtracted.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._raw = ""  # all text decoded so far
        self._sent = 0  # characters of _raw already released
        self.text = ""  # the text released so far
        self.stopped = False

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token: int) -> str:
        """Add one token; returns the text that became final (possibly "")."""
        if self.stopped:
            return ""
        self.ids.append(int(token))
        before = self._decode(self.ids[self._prefix_offset : self._read_offset])
        after = self._decode(self.ids[self._prefix_offset :])
        if len(after) <= len(before) or after.endswith("\ufffd"):  # an incomplete character: wait
            return ""
        self._raw += after[len(before) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """The end of the stream: release what is held back (a partial stop string is text after all)."""
        if self.stopped:
            return ""
        before = self._decode(self.ids[self._prefix_offset : self._read_offset])
        self._raw += self._decode(self.ids[self._prefix_offset :])[len(before) :]
        self._read_offset = self._prefix_offset = len(self.ids)
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        full = self._raw
        hits = [i for i in (full.find(s, max(0, self._sent - len(s) + 1)) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            end = min(hits)
        elif final:
            end = len(full)
        else:
            end = len(full) - self._held_back(full)
        end = max(end, self._sent)
        delta = full[self._sent : end]
        self._sent = end
        self.text += delta
        return delta

    def _held_back(self, full: str) -> int:
        """Characters at the end of `full` that begin some stop string (they may complete it next)."""
        longest = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(full)), longest, -1):
                if full.endswith(stop[:n]):
                    longest = n
                    break
        return longest
