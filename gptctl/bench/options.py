"""Options of `gptctl bench DIR` (field names = CLI flag names in snake_case)."""

from __future__ import annotations

from gptctl.runtime.settings import BenchSettings


class BenchOptions(BenchSettings):
    """`gptctl bench DIR`: benchmark an existing export artifact."""

    model: str  # the artifact directory written by `gptctl export`
    # Measure the PyTorch eager baseline (needs the artifact's input model to be loadable here).
    baseline: bool = True
