"""Thin FastAPI routes over the engine: validate, tokenize and template here, decode (or embed) in the engine.

Every refusal is an OpenAI-shaped 4xx (never a 500 for a bad request) and the server keeps serving.
Streaming is server-sent events: `data: {chunk}` lines ending with `data: [DONE]`, with `: keep-alive`
comments while a request waits for its first token. A client that goes away cancels its request, which
leaves the batch before the next decode step.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' `Request` annotations at definition.
import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gptctl.errors import GptctlError
from gptctl.serve.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ProtocolError,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    describe_validation_error,
    embeddings_response,
    error_body,
    models_response,
    new_id,
    usage_chunk,
)

log = logging.getLogger(__name__)

# 1 MiB of JSON is ~250k tokens of prompt: far past any context window gptctl exports.
DEFAULT_MAX_BODY_BYTES = 1 << 20
# Proxies commonly cut idle connections after 30-60 s; a comment every 5 s keeps a long prefill alive.
DEFAULT_KEEPALIVE_S = 5.0
_OPEN_PATHS = ("/health",)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


@dataclass
class ServeState:
    """What the routes share. `deployment` is None while the first version loads (ready -> 503)."""

    model_name: str
    metrics: Any
    deployment: Any = None
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    keepalive_s: float = DEFAULT_KEEPALIVE_S
    load_error: str | None = None
    started: float = field(default_factory=time.time)

    def phase(self) -> str:
        if self.deployment is None:
            return "failed" if self.load_error else "loading"
        return "draining" if self.deployment.draining else "ready"


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(body, status_code=status, headers=headers)


class _Gate:
    """ASGI middleware: bearer auth on every route but /health, and requests counted by route and status."""

    def __init__(self, app: Any, state: ServeState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        route = path if path.startswith(("/v1/", "/health", "/metrics", "/admin/")) else "other"
        status = {"code": 500}

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.state.api_key and path not in _OPEN_PATHS and not self._authorized(scope):
                response = _json(
                    401,
                    error_body(
                        "invalid or missing API key: send `Authorization: Bearer <key>`",
                        type="authentication_error",
                        code="invalid_api_key",
                    ),
                )
                return await response(scope, receive, counting_send)
            await self.app(scope, receive, counting_send)
        finally:
            self.state.metrics.requests.labels(route, str(status["code"])).inc()

    def _authorized(self, scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.state.api_key.encode())


async def _read_json(request: Any, limit: int) -> Any:
    """The request body as JSON: 413 past `limit` bytes, 400 for invalid UTF-8 or malformed JSON."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(413, f"the request body is {declared} bytes, over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(413, f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(400, f"the request body is not valid UTF-8: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(400, f"the request body is not valid JSON: {exc}") from None


def _parse(model: Any, body: Any, state: ServeState):
    from pydantic import ValidationError

    if not isinstance(body, dict):
        raise ProtocolError(400, "the request body must be a JSON object")
    try:
        req = model.model_validate(body, strict=True)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise ProtocolError(400, message, param=param) from None
    unsupported = req.unsupported()
    if unsupported:
        raise ProtocolError(
            400,
            f"gptctl serve does not support {', '.join(unsupported)} (use the default value)",
            param=unsupported[0],
            code="unsupported_parameter",
        )
    if req.model != state.model_name:
        raise ProtocolError(
            404,
            f"the model {req.model!r} does not exist; this server serves {state.model_name!r}",
            param="model",
            code="model_not_found",
        )
    return req


def _check_text(text: str, param: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800) is valid JSON but not text
        raise ProtocolError(400, f"{param} is not valid UTF-8 text (it holds a lone surrogate)", param=param) from None


def _completion_ids(req: CompletionRequest, tokenizer: Any) -> list[int]:
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) != 1:
            raise ProtocolError(
                400, "gptctl serve takes one prompt per request", param="prompt", code="unsupported_parameter"
            )
        prompt = prompt[0]
    if isinstance(prompt, str):
        _check_text(prompt, "prompt")
        return list(tokenizer(prompt)["input_ids"])
    vocab = len(tokenizer)
    if any(t < 0 or t >= vocab for t in prompt):
        raise ProtocolError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
    return list(prompt)


def _chat_ids(req: ChatCompletionRequest, tokenizer: Any) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ProtocolError(
            400,
            "this model's tokenizer has no chat template: use /v1/completions",
            param="messages",
            code="no_chat_template",
        )
    messages = []
    for i, m in enumerate(req.messages):
        text = m.text()
        _check_text(text, f"messages.{i}.content")
        messages.append({"role": m.role, "content": text})
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    except Exception as exc:  # a template may raise on roles it does not know (jinja2 TemplateError)
        raise ProtocolError(400, f"the chat template rejected the messages: {exc}", param="messages") from None
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


@dataclass
class _Job:
    """One admitted request: the version it runs on and the engine's handle."""

    version: Any
    handle: Any
    prompt_tokens: int
    stop: list[str]
    rid: str


async def _submit(state: ServeState, req: Any, chat: bool) -> _Job:
    """Lease the current version, tokenize, check the context window, queue in the engine."""
    from gptctl.runtime.sampling import SamplingParams
    from gptctl.serve.engine import EngineStopped, QueueFull

    deployment = state.deployment
    if deployment is None or deployment.draining:
        state.metrics.rejected.labels(state.phase()).inc()
        raise ProtocolError(503, f"the server is {state.phase()}", type="service_unavailable", code=state.phase())
    version = deployment.acquire()
    try:
        if version.task == "feature-extraction":
            raise ProtocolError(
                400,
                f"{state.model_name} is an embedding model: use /v1/embeddings",
                param="model",
                code="not_a_generation_model",
            )
        to_ids = _chat_ids if chat else _completion_ids
        ids = await asyncio.to_thread(to_ids, req, version.tokenizer)
        window = version.context_window
        if not ids:
            raise ProtocolError(400, "the prompt is empty", param="messages" if chat else "prompt")
        limit = req.token_limit() if chat else req.max_tokens
        if len(ids) >= window or (limit is not None and len(ids) + limit > window):
            asked = f" + {limit} max_tokens" if limit is not None else ""
            raise ProtocolError(
                400,
                f"this model's context window is {window} tokens; the request has {len(ids)} prompt tokens{asked}",
                param="messages" if chat else "prompt",
                code="context_length_exceeded",
            )
        sampling = SamplingParams(
            1.0 if req.temperature is None else req.temperature, 1.0 if req.top_p is None else req.top_p, req.seed
        )
        try:
            handle = version.engine.add_request(
                ids,
                limit or window - len(ids),
                sampling,
                () if req.ignore_eos else version.stop_ids,
                loop=asyncio.get_running_loop(),
            )
        except QueueFull as exc:
            state.metrics.rejected.labels("queue_full").inc()
            raise ProtocolError(
                429,
                f"the server is busy: {exc}",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            ) from None
        except EngineStopped as exc:
            state.metrics.rejected.labels("draining").inc()
            raise ProtocolError(503, str(exc), type="service_unavailable", code="draining") from None
    except BaseException:
        deployment.release(version)
        raise
    return _Job(version, handle, len(ids), req.stop_strings(), new_id("chatcmpl" if chat else "cmpl"))


async def _events(job: _Job, request: Any, keepalive_s: float) -> AsyncIterator[tuple[str, Any]]:
    """("token", id) ... then ("finished", Finished); ("idle", None) every `keepalive_s` without tokens.

    With `request`, a client that went away (checked on each idle tick) raises CancelledError.
    """
    from gptctl.serve.engine import Finished

    while True:
        try:
            event = await job.handle.next_event(timeout=keepalive_s)
        except asyncio.TimeoutError:
            if request is not None and await request.is_disconnected():
                raise asyncio.CancelledError("client disconnected") from None
            yield "idle", None
            continue
        if isinstance(event, Finished):
            yield "finished", event
            return
        yield "token", event


def _embedding_ids(inputs: list, tokenizer: Any, window: int) -> list[list[int]]:
    """Token ids of each input (texts are tokenized; id lists are checked against the vocabulary)."""
    vocab, out = len(tokenizer), []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            _check_text(item, f"input.{i}")
            ids = list(tokenizer(item)["input_ids"])
        else:
            if any(t < 0 or t >= vocab for t in item):
                raise ProtocolError(400, f"input.{i}: token ids must be in [0, {vocab})", param="input")
            ids = list(item)
        if not ids:
            raise ProtocolError(400, f"input.{i} is empty", param="input")
        if len(ids) > window:
            raise ProtocolError(
                400,
                f"this model's context window is {window} tokens; input.{i} has {len(ids)}",
                param="input",
                code="context_length_exceeded",
            )
        out.append(ids)
    return out


# OpenAI's own limit on inputs per embeddings request.
MAX_EMBEDDING_INPUTS = 2048


async def _embeddings(state: ServeState, req: EmbeddingRequest):
    """Lease the current version, tokenize, run the encoder in a worker thread, answer the vectors."""
    from gptctl.serve.engine import EngineStopped

    deployment = state.deployment
    if deployment is None or deployment.draining:
        state.metrics.rejected.labels(state.phase()).inc()
        raise ProtocolError(503, f"the server is {state.phase()}", type="service_unavailable", code=state.phase())
    inputs = req.inputs()
    if not inputs or len(inputs) > MAX_EMBEDDING_INPUTS:
        raise ProtocolError(400, f"input must hold 1 to {MAX_EMBEDDING_INPUTS} items", param="input")
    version = deployment.acquire()
    try:
        if version.task != "feature-extraction":
            raise ProtocolError(
                400,
                f"{state.model_name} is not an embedding model (export one with --task feature-extraction)",
                param="model",
                code="not_an_embedding_model",
            )
        ids = await asyncio.to_thread(_embedding_ids, inputs, version.tokenizer, version.context_window)
        try:
            vectors = await asyncio.to_thread(version.engine.embed, ids)
        except EngineStopped as exc:
            raise ProtocolError(503, str(exc), type="service_unavailable", code="draining") from None
    finally:
        deployment.release(version)
    return embeddings_response(
        state.model_name, version.fingerprint, vectors, req.encoding_format, sum(len(i) for i in ids)
    )


def _finish_reason(engine_reason: str, stopped_by_string: bool) -> str:
    return "stop" if stopped_by_string or engine_reason == "stop" else "length"


class _Run:
    """Turns a job's tokens into text (stop strings applied), counting usage and cancelling when done."""

    def __init__(self, state: ServeState, job: _Job):
        from gptctl.serve.detok import TextStream

        self.state, self.job = state, job
        self.text = TextStream(job.version.tokenizer, job.stop)
        self.finished: Any = None
        self.completion_tokens = 0

    async def deltas(self, request: Any, keepalive_s: float) -> AsyncIterator[str | None]:
        """Text deltas; None for an idle tick. Sets `finished` (engine reason, error) at the end."""
        from gptctl.serve.engine import Finished

        async for kind, value in _events(self.job, request, keepalive_s):
            if kind == "idle":
                yield None
            elif kind == "token":
                self.completion_tokens += 1
                delta = self.text.push(value)
                if delta:
                    yield delta
                if self.text.stopped:
                    self.job.handle.cancel()
                    self.finished = Finished("stop")
                    return
            else:
                self.finished = value
                rest = self.text.finish()
                if rest:
                    yield rest
                return

    def reason(self) -> str:
        engine_reason = getattr(self.finished, "reason", "stop")
        return _finish_reason(engine_reason, self.text.stopped)

    def failed(self) -> str | None:
        if self.text.stopped:
            return None
        reason = getattr(self.finished, "reason", None)
        if reason == "error":
            return self.finished.error or "generation failed"
        if reason == "cancelled":
            return "the request was cancelled by the server (shutting down)"
        return None

    def close(self, *, client_gone: bool) -> None:
        if self.finished is None:
            self.job.handle.cancel()
            if client_gone:
                self.state.metrics.cancelled.inc()
        self.state.deployment.release(self.job.version)


async def _respond(state: ServeState, request: Any, job: _Job, req: Any, chat: bool):
    run = _Run(state, job)
    fp, model = job.version.fingerprint, state.model_name
    if req.stream:
        from fastapi.responses import StreamingResponse

        return StreamingResponse(
            _sse(run, req, chat),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    gone = True
    try:
        parts = [d async for d in run.deltas(request, 0.25) if d]
        gone = False
    finally:
        run.close(client_gone=gone)
    problem = run.failed()
    if problem:
        return _json(500, error_body(problem, type="server_error", code="generation_failed"))
    make = chat_response if chat else completion_response
    return _json(200, make(job.rid, model, fp, "".join(parts), run.reason(), job.prompt_tokens, run.completion_tokens))


async def _sse(run: _Run, req: Any, chat: bool) -> AsyncIterator[str]:
    job, model, fp = run.job, run.state.model_name, run.job.version.fingerprint

    def data(obj: dict[str, Any]) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    gone = True
    try:
        if chat:
            yield data(chat_chunk(job.rid, model, fp, {"role": "assistant", "content": ""}, None))
        # No disconnect polling here: starlette listens for it and cancels this generator.
        async for delta in run.deltas(None, run.state.keepalive_s):
            if delta is None:
                yield ": keep-alive\n\n"
            elif chat:
                yield data(chat_chunk(job.rid, model, fp, {"content": delta}, None))
            else:
                yield data(completion_chunk(job.rid, model, fp, delta, None))
        gone = False
        problem = run.failed()
        if problem:
            yield data(error_body(problem, type="server_error", code="generation_failed"))
        elif chat:
            yield data(chat_chunk(job.rid, model, fp, {}, run.reason()))
        else:
            yield data(completion_chunk(job.rid, model, fp, "", run.reason()))
        if req.include_usage() and not problem:
            obj = "chat.completion.chunk" if chat else "text_completion"
            yield data(usage_chunk(job.rid, model, fp, obj, job.prompt_tokens, run.completion_tokens))
        yield "data: [DONE]\n\n"
    finally:
        run.close(client_gone=gone)


def create_app(state: ServeState):
    """The FastAPI app over `state` (see the module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException

    app = FastAPI(title="gptctl serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state

    @app.exception_handler(ProtocolError)
    async def _protocol_error(request, exc: ProtocolError):
        return _json(exc.status, exc.body(), exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        return _json(exc.status_code, error_body(str(exc.detail), type=_ERROR_TYPES.get(exc.status_code, "error")))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        return _json(400, error_body(str(exc.errors()[:1])))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return _json(500, error_body(f"internal error: {type(exc).__name__}", type="server_error"))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready():
        return _json(200 if state.phase() == "ready" else 503, _readiness(state))

    @app.get("/metrics")
    async def metrics():
        if state.deployment is not None:
            state.metrics.refresh(state.deployment)
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models():
        version = state.deployment.current if state.deployment is not None else None
        return models_response(state.model_name, version.created if version else int(state.started))

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = _parse(CompletionRequest, await _read_json(request, state.max_body_bytes), state)
        return await _respond(state, request, await _submit(state, req, False), req, False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = _parse(ChatCompletionRequest, await _read_json(request, state.max_body_bytes), state)
        return await _respond(state, request, await _submit(state, req, True), req, True)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        req = _parse(EmbeddingRequest, await _read_json(request, state.max_body_bytes), state)
        return await _embeddings(state, req)

    @app.post("/admin/swap")
    async def swap(request: Request):
        return await _swap(state, await _read_json(request, state.max_body_bytes))

    return _Gate(app, state)


def _readiness(state: ServeState) -> dict[str, Any]:
    body: dict[str, Any] = {"status": state.phase()}
    if state.load_error:
        body["error"] = state.load_error
    d = state.deployment
    if d is not None:
        stats = d.current.engine.stats()
        body.update(
            version=d.current.fingerprint,
            artifact=str(d.current.artifact),
            loading=d.loading,
            inflight=d.inflight(),
            batching={"enabled": stats.batching, "reason": stats.batching_reason, "max_rows": stats.max_batch},
        )
    return body


async def _swap(state: ServeState, body: Any):
    from gptctl.serve.versions import SwapInProgress

    if not isinstance(body, dict) or not isinstance(body.get("artifact"), str) or set(body) != {"artifact"}:
        raise ProtocolError(400, 'the body must be {"artifact": PATH}', param="artifact")
    if state.deployment is None or state.deployment.draining:
        raise ProtocolError(503, f"the server is {state.phase()}", type="service_unavailable")
    try:
        old, new = await asyncio.to_thread(state.deployment.swap, body["artifact"])
    except SwapInProgress as exc:
        raise ProtocolError(409, str(exc), type="conflict_error", code="swap_in_progress") from None
    except GptctlError as exc:
        message = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        raise ProtocolError(
            422,
            f"swap failed, {state.deployment.current.fingerprint} keeps serving: {message}",
            param="artifact",
            code="swap_failed",
        ) from None
    except Exception as exc:  # ORT or transformers errors on a broken artifact: the old version keeps serving
        log.exception("swap to %s failed", body["artifact"])
        raise ProtocolError(
            422,
            f"swap failed, {state.deployment.current.fingerprint} keeps serving: {type(exc).__name__}: {exc}",
            param="artifact",
            code="swap_failed",
        ) from None
    return {"previous": old.fingerprint, "current": new.fingerprint, "artifact": str(new.artifact)}
