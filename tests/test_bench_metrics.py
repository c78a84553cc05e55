"""Measurement helpers: warm-up excluded, iteration counts stated, decode rate from per-token times."""

import numpy as np

from gptctl.bench import metrics
from gptctl.bench.registry import BACKENDS, get_backend


def test_prefill_grid_excludes_warmup_and_states_counts():
    calls = []
    spec = {"iterations": 4, "warmup": 3, "batch_sizes": [1, 2], "prompt_lengths": [5]}
    grid = metrics.prefill_grid(lambda ids: calls.append(ids.shape), np.random.default_rng(0), 0, 50, spec)
    assert grid["iterations"] == 4 and grid["warmup"] == 3
    assert set(grid) == {"iterations", "warmup", "b1_s5", "b2_s5"}
    assert grid["b1_s5"]["n"] == 4  # only the timed runs are in the percentiles
    assert len(calls) == 2 * (4 + 3)
    cell = grid["b2_s5"]
    assert cell["p50"] <= cell["p90"] <= cell["p99"]


def test_decode_rate_counts_tokens_after_the_first():
    t = iter(range(1000))

    def fake_generate(ids, n, stamps):
        for _ in range(n):
            stamps.append(float(next(t)) * 0.01)  # one token every 10 ms

    spec = {"decode_tokens": 11, "prompt_lengths": [4], "iterations": 5, "warmup": 1}
    out = metrics.decode_rate(fake_generate, np.random.default_rng(0), 0, 10, spec)
    assert out["decode_tokens_per_s"] == 100.0 and out["decode_runs"] == metrics.DECODE_RUNS_MAX


def test_registry_holds_names_not_imports():
    assert set(BACKENDS) == {"cpu", "cuda", "tensorrt", "pytorch"}
    assert all(isinstance(module, str) for module, _, _ in BACKENDS.values())
    assert get_backend("cuda").provider == "cuda"


def test_peak_rss_is_reported():
    assert metrics.peak_rss_mb() > 0 and metrics.rss_mb() > 0
