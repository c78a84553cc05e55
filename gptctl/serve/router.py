"""The router in front of `--replicas N` worker processes: least work first, retries, rolling swaps.

Each request goes to the ready replica with the fewest requests in flight (the router's own count). A
request that fails before its first token (the replica is unreachable, dies, answers 429/503, or ends
the stream with an error first) is sent again to another replica; chunks that carry no token yet (a
chat stream's role chunk) are held back until the first token, so a retried stream shows the client one
replica's chunks only, and every chunk of a response carries one system_fingerprint. A stream that has
started is not retried: the client gets an error chunk. /health/ready and /metrics sum the replicas.
`POST /admin/swap` swaps the replicas one at a time (each one's swap is zero-downtime itself); if one
fails, those already swapped are swapped back.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' `Request` annotations at definition.
import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from gptctl.errors import GptctlError
from gptctl.serve.protocol import ProtocolError, error_body
from gptctl.serve.replicas import Replica, ReplicaOptions, ReplicaSet

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 503)  # busy or draining/loading: another replica may take it
# How long a request waits for a ready replica (a killed one is back in ~3 s on 2 cores, see replicas.py).
DEFAULT_PICK_TIMEOUT_S = 30.0
_FORWARDED_HEADERS = ("authorization", "content-type", "retry-after")


@dataclass
class RouterState:
    """What the router's routes share (`api_key` and `metrics.requests` as app._Gate expects)."""

    model_name: str
    replicas: ReplicaSet
    metrics: Any
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    pick_timeout_s: float = DEFAULT_PICK_TIMEOUT_S
    swap_timeout_s: float = 300.0
    draining: bool = False
    _client: Any = None  # httpx.AsyncClient, made on the server's event loop by its first request

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _http()
        return self._client

    swap_lock: threading.Lock = field(default_factory=threading.Lock)

    def phase(self) -> str:
        if self.draining:
            return "draining"
        if self.replicas.failed:
            return "failed"
        return "ready" if self.replicas.ready_count() else "loading"

    def inflight(self) -> int:
        return sum(r.inflight for r in self.replicas.replicas)

    @property
    def max_attempts(self) -> int:
        return len(self.replicas.replicas) + 2  # every replica once, and a restarted one again


def _http():
    import httpx

    # No read timeout: a long prefill waits on keep-alive comments; the client's own timeout applies.
    return httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0), limits=httpx.Limits(max_connections=None))


def _headers(request: Any) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}


def _release(replica: Replica) -> None:
    replica.inflight -= 1


async def _wait_pick(state: RouterState, tried: set[int]) -> Replica | None:
    deadline = time.monotonic() + state.pick_timeout_s
    while not state.draining and time.monotonic() < deadline:
        replica = state.replicas.pick(tried)
        if replica is not None:
            return replica
        await asyncio.sleep(0.05)
    return None


async def _open(
    state: RouterState, method: str, path: str, body: bytes | None, headers: dict[str, str], tried: set[int]
) -> tuple[Replica, Any]:
    """Send to the least-busy ready replica, trying others on failures; (replica, unread streamed response)."""
    import httpx

    problem = "no replica is ready"
    for attempt in range(state.max_attempts):
        replica = await _wait_pick(state, tried)
        if replica is None:
            break
        replica.inflight += 1
        replica.assigned += 1
        try:
            request = state.client.build_request(method, replica.url + path, content=body, headers=headers)
            response = await state.client.send(request, stream=True)
        except httpx.TransportError as exc:
            _release(replica)
            _failed(state, replica, tried, "unreachable")
            problem = f"replica {replica.index}: {type(exc).__name__}"
            continue
        if response.status_code in RETRY_STATUSES and attempt + 1 < state.max_attempts:
            await response.aclose()
            _release(replica)
            tried.add(replica.index)
            state.metrics.retries.labels(str(response.status_code)).inc()
            problem = f"replica {replica.index}: HTTP {response.status_code}"
            continue
        return replica, response
    raise ProtocolError(
        503, f"no replica could take the request ({problem})", type="service_unavailable", code="no_replica"
    )


def _failed(state: RouterState, replica: Replica, tried: set[int], reason: str) -> None:
    state.replicas.mark_failed(replica)
    tried.add(replica.index)
    state.metrics.retries.labels(reason).inc()


def _passthrough(content: bytes, response: Any):
    from fastapi.responses import Response

    headers = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
    return Response(
        content, status_code=response.status_code, headers=headers, media_type=response.headers.get("content-type")
    )


async def _unary(state: RouterState, method: str, path: str, body: bytes | None, headers: dict[str, str]):
    """A request answered in one body: a replica dying before it answered means another one is asked."""
    import httpx

    tried: set[int] = set()
    for _ in range(state.max_attempts):
        replica, response = await _open(state, method, path, body, headers, tried)
        try:
            content = await response.aread()
        except httpx.TransportError:
            _failed(state, replica, tried, "died")
            continue
        finally:
            await response.aclose()
            _release(replica)
        return _passthrough(content, response)
    raise ProtocolError(503, "every replica failed the request", type="service_unavailable", code="no_replica")


def _event(line: str) -> str:
    """What an SSE line is for retrying: "token" (the stream has started), "error", "comment" or "head"."""
    if line.startswith(":"):
        return "comment"
    if not line.startswith("data: "):
        return "head"
    if line == "data: [DONE]":
        return "token"
    try:
        chunk = json.loads(line[6:])
    except json.JSONDecodeError:
        return "head"
    if "error" in chunk:
        return "error"
    if chunk.get("usage"):
        return "token"
    for choice in chunk.get("choices") or []:
        if choice.get("text") or (choice.get("delta") or {}).get("content") or choice.get("finish_reason"):
            return "token"
    return "head"


def _sse_error(message: str) -> str:
    return f"data: {json.dumps(error_body(message, type='server_error', code='replica_failed'))}\n\n"


async def _relay(
    state: RouterState,
    path: str,
    body: bytes,
    headers: dict[str, str],
    replica: Replica,
    response: Any,
    tried: set[int],
) -> AsyncIterator[str]:
    """The replica's stream to the client, sent again to another replica while no token has come."""
    import httpx

    for _ in range(state.max_attempts):
        held, started, reason = [], False, "ended"
        try:
            async for line in response.aiter_lines():
                kind = _event(line) if line else "blank"
                if started or kind == "comment":
                    if line:
                        yield line + "\n\n"
                elif kind == "error":
                    reason = "error"
                    break
                elif kind == "token":
                    started = True
                    for h in [*held, line]:
                        yield h + "\n\n"
                elif line:
                    held.append(line)
        except httpx.TransportError as exc:
            if started:
                yield _sse_error(f"replica {replica.index} failed mid-stream: {type(exc).__name__}")
                yield "data: [DONE]\n\n"
                return
            reason = "died"
        finally:
            await response.aclose()
            _release(replica)
        if started:
            return
        if reason == "died":
            _failed(state, replica, tried, "died")
        else:
            tried.add(replica.index)
            state.metrics.retries.labels(reason).inc()
        try:
            replica, response = await _open(state, "POST", path, body, headers, tried)
        except ProtocolError as exc:
            yield _sse_error(exc.message)
            return
        if response.status_code != 200:
            content = await response.aread()
            await response.aclose()
            _release(replica)
            yield _sse_error(f"replica {replica.index} answered HTTP {response.status_code}: {content[:200]!r}")
            return
    yield _sse_error("every replica failed the request before its first token")


async def _generate(state: RouterState, request: Any, path: str):
    """A completion, chat completion or embeddings request, streamed or not."""
    from fastapi.responses import StreamingResponse

    body = await _read_body(request, state.max_body_bytes)
    if state.draining:
        raise ProtocolError(503, "the server is draining", type="service_unavailable", code="draining")
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        parsed = None  # the replica answers the 400
    headers = _headers(request)
    if not (isinstance(parsed, dict) and parsed.get("stream") is True):
        return await _unary(state, "POST", path, body, headers)
    tried: set[int] = set()
    replica, response = await _open(state, "POST", path, body, headers, tried)
    if response.status_code != 200:
        try:
            content = await response.aread()
        finally:
            await response.aclose()
            _release(replica)
        return _passthrough(content, response)
    return StreamingResponse(
        _relay(state, path, body, headers, replica, response, tried),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _read_body(request: Any, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(413, f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _readiness(state: RouterState) -> dict[str, Any]:
    replicas = state.replicas.replicas
    versions = sorted({r.version for r in replicas if r.ready and r.version})
    body: dict[str, Any] = {
        "status": state.phase(),
        "version": versions[0] if len(versions) == 1 else None,
        "versions": versions,
        "ready_replicas": state.replicas.ready_count(),
        "inflight": state.inflight(),
        "restarts": state.replicas.restarts,
        "replicas": [r.describe() for r in replicas],
    }
    if state.replicas.failed:
        body["error"] = state.replicas.failed
    return body


async def _metrics_text(state: RouterState, headers: dict[str, str]) -> str:
    from gptctl.serve.metrics import merge_expositions

    async def one(replica: Replica) -> str:
        try:
            response = await state.client.get(replica.url + "/metrics", headers=headers, timeout=5.0)
            return response.text if response.status_code == 200 else ""
        except Exception:  # noqa: BLE001 - a replica restarting is left out of this scrape
            return ""

    texts = await asyncio.gather(*(one(r) for r in state.replicas.replicas if r.ready))
    state.metrics.refresh(state.replicas)
    return merge_expositions([t for t in texts if t]) + state.metrics.render()


async def _swap_one(state: RouterState, replica: Replica, artifact: str, headers: dict[str, str]) -> Any:
    import httpx

    try:
        return await state.client.post(
            replica.url + "/admin/swap", json={"artifact": artifact}, headers=headers, timeout=state.swap_timeout_s
        )
    except httpx.HTTPError as exc:
        return httpx.Response(503, json=error_body(f"unreachable: {exc}", type="service_unavailable"))


async def _rolling_swap(state: RouterState, request: Any):
    """Swap every replica to the artifact, one at a time; on a failure swap back those already swapped."""
    body = json.loads(await _read_body(request, state.max_body_bytes) or b"null")
    if not isinstance(body, dict) or not isinstance(body.get("artifact"), str) or set(body) != {"artifact"}:
        raise ProtocolError(400, 'the body must be {"artifact": PATH}', param="artifact")
    if state.draining or not all(r.ready for r in state.replicas.replicas):
        raise ProtocolError(
            503,
            f"every replica must be ready to swap ({state.replicas.ready_count()} of "
            f"{len(state.replicas.replicas)} are)",
            type="service_unavailable",
            code="not_ready",
        )
    if not state.swap_lock.acquire(blocking=False):
        raise ProtocolError(409, "a swap is in progress", type="conflict_error", code="swap_in_progress")
    headers = _headers(request)
    done: list[tuple[Replica, str, dict]] = []
    try:
        for replica in state.replicas.replicas:
            response = await _swap_one(state, replica, body["artifact"], headers)
            if response.status_code != 200:
                for back, artifact, _ in reversed(done):
                    undo = await _swap_one(state, back, artifact, headers)
                    if undo.status_code == 200:
                        back.artifact, back.version = artifact, undo.json().get("current")
                    else:
                        log.error("replica %d: swapping back to %s failed: %s", back.index, artifact, undo.text[:300])
                message = (
                    (response.json().get("error") or {}).get("message") if _is_json(response) else response.text[:300]
                )
                raise ProtocolError(
                    response.status_code,
                    f"replica {replica.index}: {message} ({len(done)} swapped replica(s) swapped back)",
                    param="artifact",
                    code="swap_failed",
                )
            result = response.json()
            done.append((replica, replica.artifact, result))
            replica.artifact, replica.version = result["artifact"], result["current"]
    finally:
        state.swap_lock.release()
    results = [r for _, _, r in done]
    return {
        "previous": results[0]["previous"],
        "current": results[-1]["current"],
        "artifact": results[-1]["artifact"],
        "replicas": results,
    }


def _is_json(response: Any) -> bool:
    try:
        return isinstance(response.json(), dict)
    except ValueError:
        return False


def create_router_app(state: RouterState):
    """The FastAPI app of the router over `state` (see the module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    from gptctl.serve.app import _Gate

    app = FastAPI(title="gptctl serve router", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ProtocolError)
    async def _protocol_error(request, exc: ProtocolError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready():
        return JSONResponse(_readiness(state), status_code=200 if state.phase() == "ready" else 503)

    @app.get("/metrics")
    async def metrics(request: Request):
        return Response(await _metrics_text(state, _headers(request)), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request):
        return await _unary(state, "GET", "/v1/models", None, _headers(request))

    for path in ("/v1/completions", "/v1/chat/completions", "/v1/embeddings"):
        app.add_api_route(path, _route(state, path), methods=["POST"])

    @app.post("/admin/swap")
    async def swap(request: Request):
        return await _rolling_swap(state, request)

    return _Gate(app, state)


def _route(state: RouterState, path: str) -> Callable:
    from fastapi import Request

    async def route(request: Request):
        return await _generate(state, request, path)

    return route


def replica_options(options: Any) -> ReplicaOptions:
    """The replicas' flags from the router's ServeOptions."""
    from pathlib import Path

    name = options.model_name or Path(options.artifact).expanduser().resolve().name
    return ReplicaOptions(
        artifact=str(Path(options.artifact).expanduser().resolve()),
        model_name=name,
        provider=options.provider,
        threads=options.threads,
        max_batch=options.max_batch,
        max_queued=options.max_queued,
        api_key_env=options.api_key_env,
        drain_timeout_s=options.drain_timeout_s,
    )


def run_router(
    options: Any, on_ready: Callable[[RouterState], None] | None = None, start_timeout_s: float = 600.0
) -> None:
    """Start `options.replicas` workers and route to them until SIGTERM/Ctrl-C has drained the router."""
    import uvicorn

    from gptctl.serve.metrics import RouterMetrics
    from gptctl.serve.server import api_key

    key = api_key(options)
    ropts = replica_options(options)
    replicas = ReplicaSet(ropts, options.replicas, headers={"Authorization": f"Bearer {key}"} if key else {})
    state = RouterState(model_name=ropts.model_name, replicas=replicas, metrics=RouterMetrics(), api_key=key)
    config = uvicorn.Config(
        create_router_app(state),
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=options.drain_timeout_s,
    )
    server = _router_server(config, state, options.drain_timeout_s)

    def watch() -> None:
        deadline = time.monotonic() + start_timeout_s
        while not server.should_exit and not replicas.failed and time.monotonic() < deadline:
            if replicas.wait_ready(0.5):
                if on_ready:
                    on_ready(state)
                break
        while not server.should_exit and not replicas.failed:
            time.sleep(0.25)
        if replicas.failed:
            server.should_exit = True

    replicas.start()
    try:
        threading.Thread(target=watch, name="gptctl-serve-router-watch", daemon=True).start()
        server.run()
    finally:
        replicas.close(options.drain_timeout_s)
    if replicas.failed:
        raise GptctlError(
            f"serving {options.artifact} with {options.replicas} replicas failed: {replicas.failed}",
            f"run `gptctl serve {options.artifact}` alone to see why the replica stops",
        )


def _router_server(config: Any, state: RouterState, drain_timeout_s: float):
    """uvicorn.Server whose first SIGTERM/SIGINT drains the router: 503 to new requests, in-flight ones finish."""
    import uvicorn

    class DrainingRouter(uvicorn.Server):
        def handle_exit(self, sig, frame):  # noqa: ANN001 - uvicorn's signature
            if state.draining:
                self.should_exit = self.force_exit = True
                return
            state.draining = True
            log.warning("draining: %d request(s) in flight", state.inflight())
            threading.Thread(target=self._drain, name="gptctl-serve-router-drain", daemon=True).start()

        def _drain(self):
            deadline = time.monotonic() + drain_timeout_s
            while state.inflight() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.should_exit = True

    return DrainingRouter(config)
