"""What a benchmark or a session measures on: providers, threads, the prompt grid. Shared by
`export --benchmark`, `bench` and (next) `serve`; declared with `gptctl.options.option`."""

from __future__ import annotations

from gptctl.options import LightOptions, option
from gptctl.runtime.providers import EXECUTION_PROVIDERS

_B = "Benchmark"
PROVIDER_CHOICES = tuple(EXECUTION_PROVIDERS)


class BenchSettings(LightOptions):
    """What a benchmark measures, and how often. Shared by `export --benchmark` and `bench`."""

    provider: list[str] | None = option(
        "list[str]",
        None,
        "Execution providers to benchmark (comma-separated or repeated; default: every one that "
        "really initialises here).",
        choices=PROVIDER_CHOICES,
        panel=_B,
    )
    require_provider: list[str] = option(
        "list[str]",
        [],
        "Fail (exit 1) unless these providers are really active (not silently on CPU): a CI gate.",
        choices=PROVIDER_CHOICES,
        panel=_B,
    )
    threads: int | None = option(
        "int", None, "Intra-op threads for ORT and torch (default: all cores).", ge=1, le=1024, panel=_B
    )
    decode_tokens: int = option(
        "int",
        64,
        "Tokens generated per decode measurement (after a prompt of the first prompt length).",
        ge=2,
        le=4096,
        panel=_B,
    )
    prompt_lengths: list[int] = option(
        "list[int]", [32, 128], "Prefill sequence lengths (comma-separated or repeated).", ge=1, panel=_B, metavar="N"
    )
    batch_sizes: list[int] = option(
        "list[int]", [1], "Prefill batch sizes (comma-separated or repeated).", ge=1, panel=_B, metavar="N"
    )
    iterations: int = option(
        "int", 10, "Timed runs per prefill cell (and decode repetitions).", ge=1, le=10000, panel=_B
    )
    warmup: int = option("int", 2, "Untimed warm-up runs, excluded from the figures.", ge=0, le=1000, panel=_B)
    trust_remote_code: bool = option(
        "bool", False, "Allow the model's own Python code from its repository.", panel="Input"
    )

    @staticmethod
    def normalise_prompt_lengths(v: list, done: dict) -> list:
        if not v:
            raise ValueError("must name at least one value")
        return v

    normalise_batch_sizes = normalise_prompt_lengths
