"""Options of `gptctl bench DIR` (field names = CLI flag names in snake_case)."""

from __future__ import annotations

from gptctl.options import option
from gptctl.runtime.settings import BenchSettings


class BenchOptions(BenchSettings):
    """`gptctl bench DIR`: benchmark an existing export artifact."""

    # The artifact directory: the command's argument, not a flag.
    model: str = option("str", None, "Directory written by `gptctl export`.", required=True, cli=False)
    baseline: bool = option(
        "bool",
        True,
        "Also measure the PyTorch eager baseline (needs the artifact's input model to be loadable here).",
        flag="--baseline/--no-baseline",
    )
