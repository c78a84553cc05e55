"""Choosing the next token from a row's logits: greedy, or temperature + nucleus (top-p) sampling.

A `Sampler` owns one numpy Generator seeded by `SamplingParams.seed`, so the same seed and the same
sequence of logits give the same tokens; a batch gives each row its own sampler, so a row samples as it
would alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gptctl.errors import BadInput


@dataclass(frozen=True)
class SamplingParams:
    """How a request picks tokens. temperature 0 is greedy (argmax); top_p 1 keeps the whole distribution."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None  # None: fresh entropy, not reproducible

    def __post_init__(self):
        if not (self.temperature >= 0 and np.isfinite(self.temperature)):
            raise BadInput(
                f"temperature must be a finite number >= 0, not {self.temperature!r}",
                "use 0 for greedy decoding, about 0.7-1.0 for sampling",
            )
        if not 0 < self.top_p <= 1:
            raise BadInput(
                f"top_p must be in (0, 1], not {self.top_p!r}", "use 1 to sample from the whole distribution"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Sampler:
    """Picks one token id per call from a [vocab] logits vector."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def pick(self, logits: np.ndarray) -> int:
        """Argmax at temperature 0; else a draw from softmax(logits / T) restricted to the top-p nucleus.

        Ids whose logit is -inf (suppressed) are never drawn. Ties in the nucleus keep the lowest id first,
        so a nucleus of one token is exactly argmax.
        """
        logits = np.asarray(logits)
        if self.params.greedy:
            return int(logits.argmax())
        # float64: float32 exp over a 50k vocabulary loses the tail that top_p counts.
        scaled = logits.astype(np.float64) / self.params.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # Smallest prefix whose mass reaches top_p (at least one token).
        keep = int(np.searchsorted(cumulative, self.params.top_p * cumulative[-1])) + 1
        kept = order[:keep]
        mass = cumulative[keep - 1]
        draw = self.rng.random() * mass
        index = int(np.searchsorted(cumulative[:keep], draw, side="right"))
        return int(kept[min(index, keep - 1)])
