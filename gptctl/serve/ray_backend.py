"""`gptctl serve --backend ray`: the same engine and routes as a Ray Serve deployment.

Each Ray replica is one `GptctlReplica`: it owns a `ServeState` and a `versions.Deployment` exactly as the
local server does, and serves `app.create_app(state)` through `serve.ingress` (the routes are not written
twice). Replicas, autoscaling on ongoing requests and health checks are Ray's; `check_health` asks the
same readiness as `/health/ready`.

The artifact travels in the deployment's `user_config`, never in the application's `args`: Ray hashes
`import_path` + `args` into the code version, so a new artifact in `user_config` is a light update that
calls `reconfigure` on the running replicas instead of replacing them. `reconfigure` hands the new artifact
to a background thread that runs `Deployment.swap` (validation passed, loaded beside, canary warmed, one
atomic switch, the old version drains), and returns at once: Ray takes a replica out of routing while
`reconfigure` runs, so waiting for the load there would be a gap on a single replica. A swap that fails
leaves the old version serving and is reported as `error` in `/health/ready`; raising from `reconfigure`
would make Ray replace the replica, old version and all.

`gptctl serve start --backend ray` deploys the very config that `gptctl serve ray-config` writes, the way
`serve deploy` does, so the two paths cannot drift. ray is an optional extra: nothing here imports it at
module level, and `require_ray` turns its absence into a BadInput.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput, CheckFailed, GptctlError
from gptctl.serve.server import ServeOptions
from gptctl.serve.versions import LoadOptions

log = logging.getLogger(__name__)

IMPORT_PATH = "gptctl.serve.ray_backend:build_app"
DEPLOYMENT_NAME = "GptctlServe"
DEFAULT_APP_NAME = "gptctl"
# Ray's default health check: every 10 s, 30 s to answer. 5 s notices a dead engine thread sooner.
HEALTH_CHECK_PERIOD_S = 5.0
# How long `start` waits for the application to be RUNNING (replicas load the model and warm it).
DEPLOY_TIMEOUT_S = 300.0
# How often a follower thread retries while an admin-route swap holds the swap lock.
_SWAP_RETRY_S = 0.2


def require_ray() -> Any:
    """`ray.serve`, or a BadInput saying how to install it."""
    try:
        import ray  # noqa: F401
        from ray import serve
    except ImportError as exc:
        raise BadInput(
            f"--backend ray needs Ray Serve, which is not installed ({exc})",
            "install gptctl[ray] (pip install 'gptctl[ray]'), or serve with --backend local",
        ) from None
    return serve


@dataclass
class RayOptions:
    """Ray's side of `--backend ray` and `gptctl serve ray-config` (the model's side is ServeOptions)."""

    address: str | None = None  # an existing cluster ("auto", "ray://host:10001"); None starts a local one
    local_cpus: int = 2  # CPUs of a local cluster (Ray's default takes every core and starts a dashboard)
    num_cpus: float | None = None  # per replica; default: --threads, else 1
    autoscale_max: int | None = None  # set: autoscale between --replicas and this on ongoing requests
    target_ongoing_requests: float | None = None  # per replica when autoscaling; default: --max-batch
    app_name: str = DEFAULT_APP_NAME
    route_prefix: str = "/"


@dataclass
class ReplicaSettings:
    """What every replica is built with: the application's `args` (all but the artifact, see the docstring)."""

    model_name: str
    provider: str = "cpu"
    threads: int | None = None
    max_batch: int = 8
    max_queued: int = 64
    api_key_env: str | None = None
    keepalive_s: float = 5.0
    check_batching: bool = True
    require_validation: bool = True
    single_replica: bool = True  # the admin swap route acts on one replica: refused when there can be more
    artifact: str | None = None  # only for `serve run IMPORT_PATH artifact=...`; configs use user_config

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ReplicaSettings:
        """From a config's `args` (typed YAML) or `serve run`'s key=value strings."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(args) - set(known))
        if unknown:
            raise BadInput(f"unknown gptctl application args: {', '.join(unknown)}", f"known: {', '.join(known)}")
        if "model_name" not in args:
            raise BadInput(
                "the gptctl application needs args.model_name", "write the config with gptctl serve ray-config"
            )
        values = {}
        for name, value in args.items():
            kind = str(known[name].type)
            if isinstance(value, str) and value.lower() in ("none", "null", "") and "None" in kind:
                value = None
            elif isinstance(value, str) and kind.startswith("bool"):
                value = value.lower() in ("1", "true", "yes")
            elif isinstance(value, str) and kind.startswith(("int", "float")):
                value = (int if kind.startswith("int") else float)(value)
            values[name] = value
        return cls(**values)

    def serve_options(self, artifact: str) -> ServeOptions:
        load = LoadOptions(check_batching=self.check_batching, require_validation=self.require_validation)
        return ServeOptions(
            artifact=artifact,
            provider=self.provider,
            threads=self.threads,
            max_batch=self.max_batch,
            max_queued=self.max_queued,
            api_key_env=self.api_key_env,
            model_name=self.model_name,
            keepalive_s=self.keepalive_s,
            load=load,
        )


def _artifact_of(user_config: Any) -> str:
    if not isinstance(user_config, dict) or not isinstance(user_config.get("artifact"), str):
        raise BadInput(
            'the deployment\'s user_config must be {"artifact": PATH}', "write it with gptctl serve ray-config"
        )
    return user_config["artifact"]


class GptctlReplica:
    """One Ray Serve replica: the local server's state, versions and routes (see the module docstring)."""

    def __init__(self, args: dict[str, Any]):
        from gptctl.serve.server import build_state

        self.settings = ReplicaSettings.from_args(args)
        # The first version loads in `reconfigure` (user_config carries the artifact): till then ready is 503.
        self.state = build_state(self.settings.serve_options(self.settings.model_name))
        self._lock = threading.Lock()
        self._target: str | None = None
        self._follower: threading.Thread | None = None

    def __serve_build_asgi_app__(self):
        from gptctl.serve.app import create_app

        return _AdminGuard(create_app(self.state), self)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Ray calls this at start (first load: a failure fails the replica) and on every user_config change
        (a swap in the background: the old version serves meanwhile and stays if the new one fails)."""
        artifact = _artifact_of(user_config)
        if self.state.deployment is None:
            await asyncio.to_thread(self._load_first, artifact)
            return
        self.follow(artifact)

    def check_health(self) -> None:
        """Ray's health check: the readiness of /health/ready, and an engine thread that still runs."""
        phase = self.state.phase()
        if phase != "ready":
            raise RuntimeError(f"gptctl replica is {phase}: {self.state.load_error or ''}".strip())
        engine = self.state.deployment.current.engine
        thread = getattr(engine, "_thread", None)  # Engine has no public liveness yet; its thread is the engine
        if thread is not None and not thread.is_alive():
            raise RuntimeError(f"the engine thread of {self.state.deployment.current.fingerprint} has stopped")

    def _load_first(self, artifact: str) -> None:
        from gptctl.serve.server import load_into

        load_into(self.state, self.settings.serve_options(artifact))

    def follow(self, artifact: str) -> None:
        """Swap to `artifact` in the background; a newer call while one runs replaces its target."""
        with self._lock:
            self._target = artifact
            if self._follower is None:
                self._follower = threading.Thread(target=self._swap_to_target, name="gptctl-ray-swap", daemon=True)
                self._follower.start()

    def _swap_to_target(self) -> None:
        from gptctl.serve.versions import SwapInProgress, resolve_artifact

        while True:
            with self._lock:
                target, deployment = self._target, self.state.deployment
                if target is None:
                    self._follower = None
                    return
            try:
                if resolve_artifact(target) != deployment.current.artifact:
                    deployment.swap(target)
                done, error = True, None
            except SwapInProgress:  # an admin-route swap is loading: try again when it is done
                time.sleep(_SWAP_RETRY_S)
                done, error = False, None
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old version (ORT errors too)
                done, error = True, exc
            if error is not None:
                message = error.message if isinstance(error, GptctlError) else f"{type(error).__name__}: {error}"
                self.state.load_error = (
                    f"swap to {target} failed, {deployment.current.fingerprint} keeps serving: {message}"
                )
                log.error("%s", self.state.load_error)
            elif done:
                self.state.load_error = None
            with self._lock:
                if done and self._target == target:
                    self._target = None


class _AdminGuard:
    """ASGI: `POST /admin/swap` swaps the one replica that receives it, so it is refused when the deployment
    can have more than one (their artifact is the deployment's user_config); the rest goes to the app."""

    def __init__(self, app: Any, replica: GptctlReplica):
        self.app, self.replica = app, replica

    async def __call__(self, scope, receive, send):
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):  # under a route_prefix the path may carry it
            path = path[len(root) :]
        if scope["type"] == "http" and path == "/admin/swap" and not self.replica.settings.single_replica:
            from fastapi.responses import JSONResponse

            from gptctl.serve.protocol import error_body

            body = error_body(
                "this Ray Serve deployment can run more than one replica: the admin route would swap only one. "
                "Update the deployment's user_config instead: gptctl serve ray-config NEW -o serve.yaml, "
                "then serve deploy serve.yaml",
                type="conflict_error",
                code="swap_by_user_config",
            )
            return await JSONResponse(body, status_code=409)(scope, receive, send)
        return await self.app(scope, receive, send)


_DEPLOYMENT: Any = None


def deployment_class() -> Any:
    """The Ray Serve deployment over GptctlReplica (made once: importing ray is not free)."""
    global _DEPLOYMENT
    if _DEPLOYMENT is None:
        serve = require_ray()
        _DEPLOYMENT = serve.deployment(name=DEPLOYMENT_NAME)(serve.ingress()(GptctlReplica))
    return _DEPLOYMENT


def build_app(args: dict[str, Any]) -> Any:
    """The Ray Serve application builder that configs name as `import_path` (`args`: ReplicaSettings)."""
    settings = ReplicaSettings.from_args(dict(args))
    deployment = deployment_class()
    if settings.artifact:  # `serve run IMPORT_PATH artifact=...`: the artifact as user_config all the same
        deployment = deployment.options(user_config={"artifact": settings.artifact})
        args = {k: v for k, v in args.items() if k != "artifact"}
    return deployment.bind(dict(args))


def serve_config(options: ServeOptions, ray_options: RayOptions) -> dict[str, Any]:
    """The Ray Serve config (ServeDeploySchema) for `options`: what `ray-config` writes and `start` deploys."""
    from gptctl.serve.versions import resolve_artifact

    artifact = resolve_artifact(options.artifact).resolve()
    if options.replicas < 1:
        raise BadInput(f"--replicas {options.replicas}: must be >= 1")
    upper = ray_options.autoscale_max
    if upper is not None and upper < options.replicas:
        raise BadInput(f"--autoscale-max {upper} is below --replicas {options.replicas}", "raise --autoscale-max")
    settings = ReplicaSettings(
        model_name=options.model_name or Path(options.artifact).expanduser().resolve().name,
        provider=options.provider,
        threads=options.threads,
        max_batch=options.max_batch,
        max_queued=options.max_queued,
        api_key_env=options.api_key_env,
        keepalive_s=options.keepalive_s,
        check_batching=options.load.check_batching,
        require_validation=options.load.require_validation,
        single_replica=(upper or options.replicas) == 1,
    )
    args = {k: v for k, v in asdict(settings).items() if k != "artifact"}
    deployment: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        # Every request a replica's engine can hold (batch rows + its queue) goes to it: beyond that the engine
        # answers 429 itself, so Ray's own per-replica cap (5 by default) must not starve the batch.
        "max_ongoing_requests": options.max_batch + options.max_queued,
        "user_config": {"artifact": str(artifact)},
        "ray_actor_options": {"num_cpus": ray_options.num_cpus or options.threads or 1},
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "graceful_shutdown_timeout_s": options.drain_timeout_s,
    }
    if upper is None:
        deployment["num_replicas"] = options.replicas
    else:
        deployment["autoscaling_config"] = {
            "min_replicas": options.replicas,
            "max_replicas": upper,
            # A replica is busy when its decode batch is full: more ongoing requests than rows only queue.
            "target_ongoing_requests": ray_options.target_ongoing_requests or options.max_batch,
        }
    app = {
        "name": ray_options.app_name,
        "route_prefix": ray_options.route_prefix,
        "import_path": IMPORT_PATH,
        "args": args,
        "deployments": [deployment],
    }
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": options.host, "port": options.port},
        "applications": [app],
    }


def validate_config(config: dict[str, Any]) -> Any:
    """`config` parsed by Ray Serve's own schema (what `serve deploy` checks); BadInput if it refuses."""
    require_ray()
    from ray.serve.schema import ServeDeploySchema

    try:
        return ServeDeploySchema.model_validate(config)
    except Exception as exc:  # pydantic's ValidationError, under Ray's pydantic-compat layer
        raise BadInput(f"Ray Serve rejects the config: {exc}") from exc


def write_config(config: dict[str, Any], path: str | Path) -> Path:
    """Write `config` as YAML at `path` atomically (a reader never sees half a file); returns the path."""
    import os
    import tempfile

    import yaml

    target = Path(path).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Ray Serve config written by `gptctl serve ray-config`: deploy with `serve deploy THIS_FILE`.\n"
        "# A new model version: change only user_config.artifact and deploy again (a light update).\n"
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(header + yaml.safe_dump(config, sort_keys=False))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


@dataclass
class RayServing:
    """What `start_ray` deployed: the URL, the application, and whether this process started the cluster."""

    url: str
    app_name: str
    config: dict[str, Any]
    started_cluster: bool
    replicas: str = field(default="")


def connect(ray_options: RayOptions) -> bool:
    """Join `ray_options.address`, or start a local cluster; True when this process started it."""
    require_ray()
    import ray

    if ray.is_initialized():
        return False
    if ray_options.address:
        ray.init(address=ray_options.address, include_dashboard=False, log_to_driver=False)
        return False
    # Two CPUs and no dashboard: Ray's defaults take every core and start a web UI nobody asked for.
    ray.init(num_cpus=ray_options.local_cpus, include_dashboard=False, log_to_driver=False)
    return True


def deploy(config: dict[str, Any], timeout_s: float = DEPLOY_TIMEOUT_S) -> None:
    """Apply `config` to the running Serve instance the way `serve deploy` does, and wait until it runs.

    A config with only a new user_config is a light update (reconfigure on the running replicas)."""
    serve = require_ray()
    schema = validate_config(config)
    serve.start(http_options=config["http_options"])
    # `serve deploy` posts to the dashboard, which a local cluster here does not start; the dashboard's
    # handler calls this same controller client method.
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    client.deploy_apps(schema)
    names = [a["name"] for a in config["applications"]]
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = {n: serve.status().applications.get(n) for n in names}
        states = {n: str(getattr(s, "status", "")) for n, s in statuses.items()}
        if all(s.endswith("RUNNING") for s in states.values()):
            return
        failed = [n for n, s in states.items() if s.endswith("DEPLOY_FAILED")]
        if failed:
            message = statuses[failed[0]].message
            raise CheckFailed(f"Ray Serve could not deploy {failed[0]}: {message[-800:]}", "check the artifact path")
        if time.monotonic() > deadline:
            raise CheckFailed(f"Ray Serve did not run {names} within {timeout_s:.0f} s: {states}")
        time.sleep(0.5)


def start_ray(options: ServeOptions, ray_options: RayOptions) -> RayServing:
    """Connect (or start a local cluster), deploy the config, and return where it serves."""
    require_ray()  # before the artifact is read: a missing extra is the first thing to say
    config = serve_config(options, ray_options)
    validate_config(config)
    started = connect(ray_options)
    try:
        deploy(config)
    except BaseException:
        if started:
            stop_ray(RayServing("", ray_options.app_name, config, started))
        raise
    shown = f"[{options.host}]" if ":" in options.host else options.host
    prefix = ray_options.route_prefix.rstrip("/")
    dep = config["applications"][0]["deployments"][0]
    scale = dep.get("autoscaling_config")
    replicas = (
        f"{scale['min_replicas']}-{scale['max_replicas']} replicas (autoscaling)"
        if scale
        else f"{dep['num_replicas']} replica(s)"
    )
    return RayServing(f"http://{shown}:{options.port}{prefix}", ray_options.app_name, config, started, replicas)


def stop_ray(serving: RayServing) -> None:
    """Delete the application (Ray drains its replicas); shut down a cluster this process started."""
    import ray
    from ray import serve

    try:
        serve.delete(serving.app_name)
    finally:
        if serving.started_cluster:
            serve.shutdown()
            ray.shutdown()


def run_ray_server(
    options: ServeOptions, on_ready: Callable[[Any], None] | None = None, ray_options: RayOptions | None = None
) -> None:
    """The `ray` backend's run function: deploy, call `on_ready(RayServing)`, serve until SIGTERM/Ctrl-C."""
    serving = start_ray(options, ray_options or RayOptions())
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_ready:
            on_ready(serving)
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_ray(serving)
