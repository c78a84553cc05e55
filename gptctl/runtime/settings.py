"""What a benchmark or a session measures on: providers, threads, the prompt grid. Shared by
`export --benchmark`, `bench` and (next) `serve`; pydantic, extra keys forbidden."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _split_list(value):
    # CLI values arrive as "cpu,cuda" or repeated flags; recipes may write lists or one string.
    if value is None:
        return value
    if isinstance(value, (str, int)):
        value = [value]
    out = []
    for item in value:
        if isinstance(item, str):
            out.extend(x.strip() for x in item.split(",") if x.strip())
        else:
            out.append(item)
    return out


class BenchSettings(BaseModel):
    """What a benchmark measures, and how often. Shared by `export --benchmark` and `bench`."""

    model_config = ConfigDict(extra="forbid")

    # Execution providers to measure; None = every provider that really initialises here.
    provider: Optional[list[Literal["cpu", "cuda", "tensorrt"]]] = None
    # Providers that must be active (CI gate): missing -> exit 1 instead of `available: false`.
    require_provider: list[Literal["cpu", "cuda", "tensorrt"]] = Field(default_factory=list)
    # Intra-op threads for ORT and torch; None = all cores.
    threads: Optional[int] = Field(default=None, ge=1, le=1024)
    # Tokens generated per decode measurement (after a prompt of the first prompt length).
    decode_tokens: int = Field(default=64, ge=2, le=4096)
    # Prefill grid: batch size x prompt length.
    prompt_lengths: list[int] = Field(default_factory=lambda: [32, 128])
    batch_sizes: list[int] = Field(default_factory=lambda: [1])
    # Timed runs per grid cell (and decode repetitions); warm-up runs are excluded from the figures.
    iterations: int = Field(default=10, ge=1, le=10000)
    warmup: int = Field(default=2, ge=0, le=1000)
    trust_remote_code: bool = False

    @field_validator("provider", "require_provider", "prompt_lengths", "batch_sizes", mode="before")
    @classmethod
    def _lists(cls, v):
        return _split_list(v)

    @field_validator("prompt_lengths", "batch_sizes")
    @classmethod
    def _positive(cls, v):
        if not v:
            raise ValueError("must name at least one value")
        if any(int(x) < 1 for x in v):
            raise ValueError("values must be >= 1")
        return v
