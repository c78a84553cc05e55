"""Stand-in step kinds for recipe tests: the same shapes as select/optimize/export, no models.

Each writes its output atomically with a manifest, like the real steps, and derives its output and
metrics from its options and input content, so caching and references can be checked in milliseconds.
`CALLS` records which steps executed.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from gptctl.errors import CheckFailed
from gptctl.manifest import Manifest, sha256_path
from gptctl.options import LightOptions, option
from gptctl.outputs import atomic_output_dir
from gptctl.recipe.steps import SELECTION_FILE, StepKind, StepRun

CALLS: list[str] = []


class SelectOpts(LightOptions):
    max_params: str | None = option("str")
    license: str | None = option("str")
    instruct: bool | None = option("bool")
    top: int = option("int", 3, ge=1)


class _Common(LightOptions):
    model: str = option("str", required=True)
    output: str = option("str", required=True)
    overwrite: bool = option("bool", False)
    data: str | None = option("str")
    seed: int = option("int", 0)
    sleep: float = option("float", 0.0, ge=0)  # lets the kill test catch a step mid-way
    fail: bool = option("bool", False)


class LoraOpts(_Common):
    rank: int = option("int", 8, ge=1, le=256)
    alpha: float = option("float", 16.0, gt=0)
    max_steps: int = option("int", 10, ge=1)


class PruneOpts(_Common):
    ratio: float = option("float", 0.3, ge=0.0, lt=1.0)


class ExportOpts(_Common):
    quantize: str = option("str", "none", choices=("none", "int8", "int4"))
    benchmark: bool = option("bool", True)
    atol: float = option("float", 1e-3, gt=0)


def _content(model: str) -> str:
    p = Path(model)
    return sha256_path(p) if p.exists() else model


def _write(run: StepRun, step: str, metrics: dict, extra: dict | None = None) -> dict:
    CALLS.append(run.name)
    opts = run.options
    with atomic_output_dir(run.output) as work:
        (work / "weights.bin").write_text(
            # The input enters by content, not path: a result does not depend on where the workdir is.
            json.dumps(
                {"input": _content(opts.model), "options": opts.model_dump(exclude={"output", "overwrite", "model"})}
            )
        )
        if opts.sleep:
            (work / "half-written.bin").write_text("x")
            time.sleep(opts.sleep)
        if opts.fail:
            raise CheckFailed(f"{run.name} failed on purpose")
        manifest = Manifest(
            step=step,
            method=run.method,
            options=opts.model_dump(mode="json"),
            inputs={"model": {"spec": opts.model}},
            metrics=metrics,
            extra=extra or {},
        )
        manifest.write(work)
    return manifest.to_dict()


def _ppl(model: str, salt: str) -> float:
    return 10 + int(hashlib.sha256((_content(model) + salt).encode()).hexdigest()[:4], 16) / 65536


def _select(run: StepRun) -> dict:
    CALLS.append(run.name)
    with atomic_output_dir(run.output) as work:
        chosen = {"id": "tiny/test-model", "params": 1000}
        if run.sources.get(chosen["id"]):
            chosen["source_path"] = run.sources[chosen["id"]]
        (work / SELECTION_FILE).write_text(
            json.dumps({"model": chosen, "models": [chosen], "constraints": run.options.model_dump()})
        )
        manifest = Manifest(
            step="select", options=run.options.model_dump(mode="json"), metrics={"model": chosen["id"], "candidates": 1}
        )
        manifest.write(work)
    return manifest.to_dict()


def _optimize(run: StepRun) -> dict:
    before = _ppl(run.options.model, "")
    if run.method == "lora":
        return _write(run, "optimize", {"ppl_before": before, "ppl_after": before * 0.9, "train_tokens_per_s": 1000.0})
    return _write(
        run,
        "optimize",
        {
            "ppl_before": before,
            "ppl_after": before * (1 + run.options.ratio / 10),
            "sparsity_realised": run.options.ratio,
        },
    )


def _export(run: StepRun) -> dict:
    ppl = _ppl(run.options.model, "")
    bench = {
        "pytorch": {"available": True, "decode_tokens_per_s": 50.0},
        "cpu": {"available": True, "decode_tokens_per_s": 90.0, "decode_speedup_vs_pytorch": 1.8},
        "cuda": {"available": False, "reason": "no GPU"},
    }
    return _write(
        run,
        "export",
        {"size_bytes": 123456, "ppl_fp32": ppl, "ppl_quantized": ppl * 1.02},
        extra={
            "validation": {"passed": True, "max_abs_diff": 2e-4},
            "benchmark": bench if run.options.benchmark else {},
        },
    )


FAKE_KINDS = {
    "select": StepKind(
        "select",
        lambda m: SelectOpts,
        _select,
        takes_model=False,
        runner_fields=(),
        model_file=SELECTION_FILE,
        step_keys=("sources",),
    ),
    "optimize": StepKind(
        "optimize", lambda m: {"lora": LoraOpts, "prune": PruneOpts}[m], _optimize, methods=lambda: ("lora", "prune")
    ),
    "export": StepKind("export", lambda m: ExportOpts, _export),
}


def install(monkeypatch) -> None:
    """Swap the real kinds for the fakes everywhere (the registry is one shared dict)."""
    from gptctl.recipe import steps

    for name, kind in FAKE_KINDS.items():
        monkeypatch.setitem(steps.KINDS, name, kind)
    CALLS.clear()


def main() -> None:
    """Run the CLI with the fakes installed (for subprocess tests: `python recipe_fakes.py run ...`)."""
    from gptctl.cli.app import main as cli_main
    from gptctl.recipe import steps

    steps.KINDS.update(FAKE_KINDS)
    cli_main()


if __name__ == "__main__":
    main()
