"""Serve an exported model as an OpenAI-compatible HTTP service; swap versions; drive load.

`gptctl serve ARTIFACT` listens on 127.0.0.1:8000 (/v1/completions, /v1/chat/completions, /v1/models,
/health, /health/ready, /metrics), on the backend `--backend` names (gptctl/serve/backends.py: local, ray);
`gptctl serve ray-config ARTIFACT -o serve.yaml` writes a Ray Serve config for `serve deploy`;
`gptctl serve swap NEW --url URL` replaces the served version without downtime; `gptctl serve loadtest
--url URL` measures throughput and latency. fastapi, uvicorn, prometheus-client and ray are imported only
when a server starts.
"""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

from gptctl.cli import common
from gptctl.serve.backends import BACKEND_NAMES, DEFAULT_BACKEND, backend_help


class _DefaultToStart(TyperGroup):
    """`gptctl serve ARTIFACT ...` means `gptctl serve start ARTIFACT ...`."""

    def resolve_command(self, ctx, args):  # type: ignore[override]
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["start", *args]
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=_DefaultToStart,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Serve an exported model as an OpenAI-compatible HTTP service; swap versions; drive load.",
)


def _serve_options(
    artifact, host, port, provider, threads, max_batch, max_queued, api_key_env, model_name, replicas, watch=None
):
    from gptctl.errors import BadInput
    from gptctl.runtime.providers import PROVIDER_NAMES
    from gptctl.serve.server import ServeOptions

    if provider not in PROVIDER_NAMES:
        raise BadInput(f"--provider {provider!r} is not known", f"use one of: {', '.join(PROVIDER_NAMES)}")
    return ServeOptions(
        artifact=artifact,
        host=host,
        port=port,
        provider=provider,
        threads=threads,
        max_batch=max_batch,
        max_queued=max_queued,
        api_key_env=api_key_env,
        model_name=model_name,
        replicas=replicas,
        watch=watch,
    )


def _ray_options(ray_address, ray_num_cpus, autoscale_max, route_prefix="/"):
    from gptctl.serve.ray_backend import RayOptions

    return RayOptions(
        address=ray_address, num_cpus=ray_num_cpus, autoscale_max=autoscale_max, route_prefix=route_prefix
    )


_ARTIFACT_HELP = "An export directory (gptctl export --output) or a run dir with one."
_REPLICAS_HELP = (
    "Model replicas: worker processes behind one router on --port (local), or the deployment's "
    "num_replicas (ray; the lower bound with --autoscale-max)."
)
_AUTOSCALE_HELP = "ray: autoscale between --replicas and this many replicas on ongoing requests (one full batch each)."
_RAY_CPUS_HELP = "ray: CPUs each replica reserves (default: --threads, else 1)."


def _print_ready(state, replicas: int) -> None:
    if hasattr(state, "url"):  # the ray backend's RayServing
        common.err.print(
            f"ready: Ray Serve application {state.app_name!r}, {state.replicas}; OpenAI API at {state.url}/v1",
            highlight=False,
        )
        return
    if replicas > 1:
        body = {r.index: r.version for r in state.replicas.replicas}
        common.err.print(
            f"ready: {state.model_name}, {len(body)} replicas: " + ", ".join(f"{i}={v}" for i, v in body.items()),
            highlight=False,
        )
        return
    version = state.deployment.current
    common.err.print(
        f"ready: {state.model_name} {version.fingerprint}, batching "
        f"{'on' if version.engine.batching else 'off'} ({version.engine.batching_reason})",
        highlight=False,
    )


@app.command("start")
@common.handle_errors
def start_command(
    artifact: str = typer.Argument(..., help=_ARTIFACT_HELP),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (a non-local one wants --api-key-env)."),
    port: int = typer.Option(8000, help="TCP port."),
    provider: str = typer.Option("cpu", help="ONNX Runtime execution provider: cpu, cuda, ..."),
    threads: int | None = typer.Option(None, help="ONNX Runtime intra-op threads (default: ORT's choice)."),
    max_batch: int = typer.Option(8, help="Requests decoding together in one batch."),
    max_queued: int = typer.Option(64, help="Requests waiting for a batch row; beyond that the server says 429."),
    api_key_env: str | None = typer.Option(None, help="Variable holding the key every route but /health requires."),
    model_name: str | None = typer.Option(None, help="The model id clients send (default: the artifact dir's name)."),
    replicas: int = typer.Option(1, help=_REPLICAS_HELP),
    backend: str = typer.Option(
        DEFAULT_BACKEND,
        click_type=click.Choice(BACKEND_NAMES),
        metavar="[" + "|".join(BACKEND_NAMES) + "]",
        help="Where the service runs: " + backend_help(),
    ),
    ray_address: str | None = typer.Option(None, help="ray: an existing cluster (default: start a local one)."),
    autoscale_max: int | None = typer.Option(None, help=_AUTOSCALE_HELP),
    ray_num_cpus: float | None = typer.Option(None, help=_RAY_CPUS_HELP),
    watch: str | None = typer.Option(
        None,
        help="A symlink to follow: when it is replaced (atomically, e.g. `ln -sfn NEW L.tmp && mv -T L.tmp L`), "
        "swap to its new target as `serve swap` would (local backend).",
    ),
) -> None:
    """Serve ARTIFACT until SIGTERM or Ctrl-C (which drain: in-flight requests finish first)."""
    from gptctl.errors import BadInput
    from gptctl.serve.backends import run_backend
    from gptctl.serve.server import exposure_warning

    opts = _serve_options(
        artifact, host, port, provider, threads, max_batch, max_queued, api_key_env, model_name, replicas, watch
    )
    extra = None
    if backend == "ray" and watch:
        raise BadInput("--watch works with the local backend", "on Ray, deploy a new user_config (serve ray-config)")
    if backend == "ray":
        extra = _ray_options(ray_address, ray_num_cpus, autoscale_max)
    elif ray_address or autoscale_max or ray_num_cpus:
        raise BadInput("--ray-address, --autoscale-max and --ray-num-cpus need --backend ray")
    warning = exposure_warning(opts)
    if warning:
        common.err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    shown = f"[{host}]" if ":" in host else host
    common.err.print(
        f"gptctl serve ({backend}): loading {artifact}; OpenAI API at http://{shown}:{port}/v1 "
        f"(ready: http://{shown}:{port}/health/ready)",
        highlight=False,
    )
    run_backend(backend, opts, lambda state: _print_ready(state, replicas), extra)


@app.command("ray-config")
@common.handle_errors
def ray_config_command(
    artifact: str = typer.Argument(..., help=_ARTIFACT_HELP + " Its absolute path goes into user_config."),
    output: str = typer.Option(..., "--output", "-o", help="The YAML file to write (e.g. serve.yaml)."),
    host: str = typer.Option("0.0.0.0", help="http_options.host of the cluster's proxies."),
    port: int = typer.Option(8000, help="http_options.port of the cluster's proxies."),
    provider: str = typer.Option("cpu", help="ONNX Runtime execution provider on the replicas."),
    threads: int | None = typer.Option(None, help="ONNX Runtime intra-op threads per replica."),
    max_batch: int = typer.Option(8, help="Requests decoding together in one replica's batch."),
    max_queued: int = typer.Option(64, help="Requests waiting for a batch row per replica before 429."),
    api_key_env: str | None = typer.Option(None, help="Variable (set on the replicas) holding the key."),
    model_name: str | None = typer.Option(None, help="The model id clients send (default: the artifact dir's name)."),
    replicas: int = typer.Option(1, help=_REPLICAS_HELP),
    autoscale_max: int | None = typer.Option(None, help=_AUTOSCALE_HELP),
    ray_num_cpus: float | None = typer.Option(None, help=_RAY_CPUS_HELP),
    route_prefix: str = typer.Option("/", help="The application's route_prefix."),
    json_out: bool = typer.Option(False, "--json", help="Print the config as JSON too."),
) -> None:
    """Write a Ray Serve config for `serve deploy` on a cluster (checked by Ray Serve's own schema)."""
    from gptctl.serve.ray_backend import serve_config, validate_config, write_config

    opts = _serve_options(
        artifact, host, port, provider, threads, max_batch, max_queued, api_key_env, model_name, replicas
    )
    config = serve_config(opts, _ray_options(None, ray_num_cpus, autoscale_max, route_prefix))
    validate_config(config)
    path = write_config(config, output)
    if json_out:
        common.print_json({"path": str(path), "config": config})
    else:
        common.out.print(f"wrote {path}: serve deploy {path}", highlight=False)


@app.command("swap")
@common.handle_errors
def swap_command(
    artifact: str = typer.Argument(..., help="The new version: an export directory the server can read."),
    url: str = typer.Option("http://127.0.0.1:8000", help="The running server."),
    api_key_env: str | None = typer.Option(None, help="Environment variable holding the server's key."),
    timeout: float = typer.Option(300.0, help="Seconds to wait for the new version to load and warm."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Replace the served version with ARTIFACT without downtime (exit 1 if it fails to load or warm)."""
    from gptctl.serve.client import swap

    result = swap(url, artifact, api_key_env=api_key_env, timeout=timeout)
    if json_out:
        common.print_json(result)
    else:
        common.out.print(f"swapped {result['previous']} -> {result['current']} ({result['artifact']})", highlight=False)


@app.command("loadtest")
@common.handle_errors
def loadtest_command(
    url: str = typer.Option("http://127.0.0.1:8000", help="The running server."),
    requests: int = typer.Option(32, help="Requests to send in all."),
    concurrency: int = typer.Option(4, help="Requests in flight at once."),
    max_tokens: int = typer.Option(32, help="max_tokens of each request."),
    prompt: str = typer.Option("The patient was given", help="The prompt of every request."),
    api_key_env: str | None = typer.Option(None, help="Environment variable holding the server's key."),
    timeout: float = typer.Option(60.0, help="Seconds one request may take."),
    ignore_eos: bool = typer.Option(
        False, help="Ask for max_tokens tokens past end-of-sequence (vLLM's and llama-server's `ignore_eos`)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Send a bounded number of streaming completions; print ok/failed, tok/s, TTFT and ITL p50/p95."""
    from dataclasses import asdict

    from gptctl.serve.loadtest import LoadtestOptions, run_loadtest

    report = run_loadtest(
        LoadtestOptions(
            url=url,
            requests=requests,
            concurrency=concurrency,
            max_tokens=max_tokens,
            prompt=prompt,
            api_key_env=api_key_env,
            timeout=timeout,
            ignore_eos=ignore_eos,
        )
    )
    if json_out:
        common.print_json(asdict(report))
    else:
        for line in report.lines():
            common.out.print(line, highlight=False)
    if report.failed:
        raise typer.Exit(1)
