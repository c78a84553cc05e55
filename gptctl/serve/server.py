"""Running the service: uvicorn on host:port, the first version loaded beside it, SIGTERM drains.

The server listens at once (/health answers, /health/ready is 503 while the model loads). SIGTERM (or
the first Ctrl-C) drains: ready turns 503, new requests are refused, in-flight ones finish, then the
process exits; a second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput, GptctlError
from gptctl.serve.versions import LoadOptions

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeOptions:
    """`gptctl serve ARTIFACT`'s options."""

    artifact: str
    host: str = "127.0.0.1"
    port: int = 8000
    provider: str = "cpu"
    threads: int | None = None
    max_batch: int = 8  # rows decoding together
    max_queued: int = 64  # requests waiting for a row before 429
    api_key_env: str | None = None  # the variable holding the bearer key (the key never goes on a command line)
    model_name: str | None = None  # default: the artifact directory's name
    drain_timeout_s: float = 60.0  # SIGTERM: how long in-flight requests may take before exit
    keepalive_s: float = 5.0
    replicas: int = 1  # > 1: worker processes behind a router on host:port (gptctl/serve/router.py)
    watch: str | None = None  # a symlink whose atomic replacement swaps to its new target (serve/watch.py)
    load: LoadOptions = field(default_factory=LoadOptions)


def api_key(options: ServeOptions) -> str | None:
    if not options.api_key_env:
        return None
    key = os.environ.get(options.api_key_env, "")
    if not key.strip():
        raise BadInput(
            f"--api-key-env {options.api_key_env}: the variable is unset or empty",
            f"export {options.api_key_env}=<a secret key> before starting the server",
        )
    return key.strip()


def exposure_warning(options: ServeOptions) -> str | None:
    """A sentence when the server listens beyond this machine without a key (the CLI prints it)."""
    if options.host not in LOCAL_HOSTS and not options.api_key_env:
        return (
            f"listening on {options.host} without --api-key-env: anyone who can reach port {options.port} "
            "can use the model"
        )
    return None


def build_state(options: ServeOptions):
    from gptctl.serve.app import ServeState
    from gptctl.serve.metrics import ServeMetrics

    name = options.model_name or Path(options.artifact).expanduser().resolve().name
    return ServeState(
        model_name=name, metrics=ServeMetrics(), api_key=api_key(options), keepalive_s=options.keepalive_s
    )


def load_into(state: Any, options: ServeOptions) -> None:
    """Load the first version into `state` (BadInput/CheckFailed are kept as `state.load_error`)."""
    from gptctl.serve.metrics import EngineObserver
    from gptctl.serve.versions import Deployment, load_version

    observer = EngineObserver(state.metrics)
    opts = LoadOptions(
        **{
            **options.load.__dict__,
            "provider": options.provider,
            "threads": options.threads,
            "max_batch": options.max_batch,
            "max_queued": options.max_queued,
        }
    )
    started = time.perf_counter()
    version = load_version(options.artifact, opts, observer)
    state.deployment = Deployment(version, opts, observer)
    log.info(
        "serving %s (%s) after %.1f s; batching %s: %s",
        version.fingerprint,
        version.artifact,
        time.perf_counter() - started,
        "on" if version.engine.batching else "off",
        version.engine.batching_reason,
    )


def run_server(options: ServeOptions, on_ready: Callable[[Any], None] | None = None) -> None:
    """Serve until SIGTERM/Ctrl-C has drained the server. Raises the load error if the model fails to load.

    With `options.replicas` > 1 the router serves instead, and `on_ready` gets its RouterState."""
    import uvicorn

    from gptctl.serve.app import create_app
    from gptctl.serve.versions import resolve_artifact

    resolved = resolve_artifact(options.artifact)  # a wrong path fails before the server listens
    if options.replicas < 1:
        raise BadInput(f"--replicas {options.replicas}: must be >= 1")
    if options.watch:
        on_ready = _with_watcher(options, on_ready)
    if options.replicas > 1:
        from gptctl.serve.router import run_router

        return run_router(ServeOptions(**{**options.__dict__, "artifact": str(resolved)}), on_ready)
    state = build_state(options)
    config = uvicorn.Config(
        create_app(state),
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=options.drain_timeout_s,
    )
    server = _DrainingServer(config, state, options.drain_timeout_s)
    failure: list[BaseException] = []

    def load() -> None:
        try:
            load_into(state, options)
            if on_ready:
                on_ready(state)
        except BaseException as exc:  # noqa: BLE001 - reported after the server stops
            failure.append(exc)
            state.load_error = str(exc)
            server.should_exit = True

    threading.Thread(target=load, name="gptctl-serve-load", daemon=True).start()
    try:
        server.run()
    finally:
        if state.deployment is not None:
            state.deployment.close()
    if failure:
        exc = failure[0]
        raise exc if isinstance(exc, GptctlError) else GptctlError(f"loading {options.artifact} failed: {exc}")


def _with_watcher(options: ServeOptions, on_ready: Callable[[Any], None] | None) -> Callable[[Any], None]:
    """`on_ready`, then a LinkWatcher on --watch (its starting target read now, so a deploy during the
    first load is still noticed)."""
    from gptctl.serve.watch import LinkWatcher, check_watchable, http_swapper, link_target

    check_watchable(options.watch)
    first = link_target(options.watch)

    def ready(state: Any) -> None:
        if on_ready:
            on_ready(state)
        swapper = http_swapper(options.host, options.port, options.api_key_env)
        state.watcher = LinkWatcher(options.watch, swapper, current=first).start()

    return ready


class _DrainingServer:
    """uvicorn.Server whose first SIGTERM/SIGINT drains (see the module docstring)."""

    def __new__(cls, config: Any, state: Any, drain_timeout_s: float):
        import uvicorn

        class DrainingServer(uvicorn.Server):
            def handle_exit(self, sig, frame):  # noqa: ANN001 - uvicorn's signature
                if getattr(self, "_draining", False) or state.deployment is None:
                    self.should_exit = self.force_exit = True
                    return
                self._draining = True
                state.deployment.start_draining()
                log.warning("draining: %d request(s) in flight", state.deployment.inflight())
                threading.Thread(target=self._drain, name="gptctl-serve-drain", daemon=True).start()

            def _drain(self):
                deadline = time.monotonic() + drain_timeout_s
                while state.deployment.inflight() and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.should_exit = True

        return DrainingServer(config)
