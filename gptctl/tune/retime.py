"""The front re-timed at the end of a study: timings that hold.

In-study decode figures come from trials run one after another on a machine whose load changes (other
trials' training, the sampler, the OS); a point can reach the front on one lucky measurement. Once the
study is over, each front point's export artifact (and the recipe-as-written's, the figure it is
compared with) is benchmarked again, one at a time in the benchmark slot, with its own benchmark
settings (`iterations` repeats, the median kept), and both figures are reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gptctl.errors import GptctlError
from gptctl.manifest import read_manifest
from gptctl.recipe.lock import workdir_lock
from gptctl.recipe.schema import Recipe
from gptctl.tune.trial import TrialResult

# The export options that say what a benchmark measures (gptctl.runtime.settings.BenchSettings).
_SETTINGS = ("provider", "threads", "decode_tokens", "prompt_lengths", "batch_sizes", "iterations", "warmup")


def last_export_step(recipe: Recipe) -> str | None:
    """The name of the recipe's last export step (the artifact the objectives are read from)."""
    names = [s.name for s in recipe.steps if s.kind == "export"]
    return names[-1] if names else None


def retime_trials(recipe: Recipe, trials: Iterable[TrialResult], slot: Path) -> dict[int, dict[str, Any]]:
    """Trial number -> its re-timed figures (`decode_tok_s`, the runs, the in-study figure), or
    {"skipped": why} for a trial whose artifact cannot be benchmarked again."""
    step = last_export_step(recipe)
    out: dict[int, dict[str, Any]] = {}
    for t in trials:
        if t.number in out:
            continue
        artifact = Path(t.workdir) / step if step else None
        if artifact is None or not (artifact / "model.onnx").is_file():
            out[t.number] = {"skipped": "no exported model.onnx to benchmark"}
            continue
        with workdir_lock(slot, recipe="benchmark slot", wait_s=math.inf):
            out[t.number] = retime_artifact(artifact, t.objectives.get("decode_tok_s"))
    return out


def retime_artifact(artifact: Path, in_study: float | None) -> dict[str, Any]:
    """Benchmark one export artifact again with the settings it was exported with (CPU; no PyTorch)."""
    from gptctl.bench import bench_artifact

    options = dict((read_manifest(artifact) or {}).get("options") or {})
    settings = {k: options[k] for k in _SETTINGS if options.get(k) is not None}
    try:
        bench = bench_artifact({"model": str(artifact), "baseline": False, **settings})["benchmark"]
    except GptctlError as exc:
        return {"skipped": exc.message}
    cpu = bench.get("cpu") or {}
    rate = cpu.get("decode_tokens_per_s")
    if not cpu.get("available") or rate is None:
        return {"skipped": cpu.get("reason") or "the CPU provider measured no decode rate"}
    record: dict[str, Any] = {
        "decode_tok_s": rate,
        "decode_tok_s_runs": cpu.get("decode_tokens_per_s_runs", []),
        "in_study_decode_tok_s": in_study,
    }
    if in_study:
        record["change"] = round(rate / in_study - 1, 4)  # +0.05: 5% faster on the re-run
    return record
