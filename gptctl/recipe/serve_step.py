"""The recipe step kind `serve`: a canary of the service on an earlier step's artifact.

It starts `gptctl serve` on the artifact (e.g. `model: ${steps.ship.model}`), runs a bounded load test with
the bundled driver, stops the service, and records the report as `metrics` for gates
(`steps.canary.metrics.failed == 0`, `...tokens_per_s`, `...ttft_p95_ms`).
"""

from __future__ import annotations

import json

from gptctl.options import LightOptions, option

REPORT_FILE = "loadtest.json"


class ServeStepOptions(LightOptions):
    """A `serve` step: which artifact, how much load."""

    model: str = option("str", None, "The export directory to serve (default: the previous step's).", required=True)
    output: str = option("str", None, "Where the report and manifest go (set by the runner).", required=True)
    overwrite: bool = option("bool", False, "Replace a non-empty output (set by the runner).")
    requests: int = option("int", 8, "Requests of the load test in all (a canary, not a benchmark).", ge=1, le=10000)
    concurrency: int = option("int", 2, "Requests in flight at once.", ge=1, le=256)
    max_tokens: int = option("int", 16, "max_tokens of each request.", ge=1, le=4096)
    prompt: str = option("str", "The patient was given", "The prompt of every request.")
    provider: str = option("str", "cpu", "ONNX Runtime execution provider of the service.")
    threads: int | None = option("int", None, "ONNX Runtime intra-op threads (default: ORT's choice).", ge=1)
    max_batch: int = option("int", 8, "Requests decoding together in one batch.", ge=1, le=256)
    replicas: int = option("int", 1, "Worker processes behind the router.", ge=1, le=64)
    # SmolLM2-135M int4 is ready ~5 s after the start on 2 busy cores; 300 s leaves room for big models.
    ready_timeout_s: float = option("float", 300.0, "Seconds the service may take to become ready.", gt=0)
    timeout: float = option("float", 120.0, "Seconds one request may take.", gt=0)


def serve_options(method: str | None) -> type:
    return ServeStepOptions


def serve_execute(run) -> dict:
    """Serve, load, stop; write the report and the manifest (metrics: the report's figures)."""
    from dataclasses import asdict

    from gptctl.manifest import Manifest, read_manifest, sha256_file
    from gptctl.outputs import atomic_output_dir
    from gptctl.serve.canary import CanaryOptions, run_canary
    from gptctl.serve.versions import resolve_artifact

    o = run.options
    artifact = resolve_artifact(o.model)
    run.progress.info(f"serving {artifact}: {o.requests} requests, {o.concurrency} at a time")
    result = run_canary(
        CanaryOptions(
            artifact=str(artifact),
            requests=o.requests,
            concurrency=o.concurrency,
            max_tokens=o.max_tokens,
            prompt=o.prompt,
            provider=o.provider,
            threads=o.threads,
            max_batch=o.max_batch,
            replicas=o.replicas,
            ready_timeout_s=o.ready_timeout_s,
            timeout=o.timeout,
        )
    )
    report = asdict(result.report)
    metrics = {
        k: report[k]
        for k in (
            "requests",
            "ok",
            "failed",
            "completion_tokens",
            "tokens_per_s",
            "wall_s",
            "ttft_p50_ms",
            "ttft_p95_ms",
            "itl_p50_ms",
            "itl_p95_ms",
        )
    }
    metrics.update(startup_s=result.startup_s, exit_code=result.exit_code, versions=report["fingerprints"])
    with atomic_output_dir(run.output) as work:
        path = work / REPORT_FILE
        path.write_text(json.dumps({**report, "log_tail": result.log_tail}, indent=2) + "\n")
        manifest = Manifest(
            step="serve",
            options=o.model_dump(mode="json"),
            inputs={"model": {"path": str(artifact), "sha256": sha256_file(artifact / "model.onnx")}},
            outputs={"loadtest": {"path": str(run.output / REPORT_FILE), "sha256": sha256_file(path)}},
            metrics=metrics,
            parent=read_manifest(artifact),
        )
        manifest.write(work)
    return manifest.to_dict()
