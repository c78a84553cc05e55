"""OpenAI request and response models for /v1/completions, /v1/chat/completions, /v1/embeddings and /v1/models.

Requests are parsed strictly (unknown fields, wrong types and out-of-range values are 400s that name the
field); fields OpenAI has but gptctl does not implement are accepted only at their neutral value and
named in the error otherwise (`n` > 1, logprobs, tools...), so a client never silently gets less than it
asked for. Errors go out in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# OpenAI's own limit on stop sequences.
MAX_STOP_SEQUENCES = 4


class ProtocolError(Exception):
    """A request the server refuses, rendered as an OpenAI error body with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    """Fields shared by both endpoints."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)
    user: str | None = None
    # vLLM's and llama.cpp's server's extension: decode max_tokens tokens even past end-of-sequence, so a
    # benchmark's requests all do the same work whatever the model says.
    ignore_eos: bool = False
    # Accepted at their neutral value only (see `unsupported`).
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    def stop_strings(self) -> list[str]:
        return list(self.stop or [])

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def _common_unsupported(self) -> list[str]:
        bad = []
        if self.n != 1:
            bad.append("n")
        if self.presence_penalty not in (None, 0):
            bad.append("presence_penalty")
        if self.frequency_penalty not in (None, 0):
            bad.append("frequency_penalty")
        if self.logit_bias:
            bad.append("logit_bias")
        return bad


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for completions
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None

    def unsupported(self) -> list[str]:
        bad = self._common_unsupported()
        bad += [
            name
            for name, on in (
                ("echo", self.echo),
                ("logprobs", self.logprobs is not None),
                ("best_of", self.best_of not in (None, 1)),
                ("suffix", self.suffix),
            )
            if on
        ]
        return bad


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any | None = None
    functions: list[Any] | None = None
    function_call: Any | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> list[str]:
        bad = self._common_unsupported()
        bad += [
            name
            for name, on in (
                ("logprobs", self.logprobs),
                ("top_logprobs", self.top_logprobs is not None),
                ("tools", self.tools),
                ("tool_choice", self.tool_choice not in (None, "none")),
                ("functions", self.functions),
                ("function_call", self.function_call),
                ("response_format", (self.response_format or {}).get("type", "text") != "text"),
            )
            if on
        ]
        return bad

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class EmbeddingRequest(_Strict):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"  # the openai client asks for base64 by default
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    def unsupported(self) -> list[str]:
        return ["dimensions"] if self.dimensions is not None else []

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list: of texts, or of token-id lists."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and all(isinstance(v, int) for v in value):
            return [list(value)]
        return list(value)


def embeddings_response(
    model: str, fingerprint: str, vectors: Any, encoding_format: str, prompt_tokens: int
) -> dict[str, Any]:
    """OpenAI's embeddings list; base64 is the float32 little-endian bytes, as OpenAI sends it."""
    import base64

    import numpy as np

    def encode(v):
        if encoding_format == "base64":
            return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
        return [float(x) for x in v]

    return {
        "object": "list",
        "model": model,
        "system_fingerprint": fingerprint,
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def completion_response(
    rid: str, model: str, fingerprint: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def completion_chunk(rid: str, model: str, fingerprint: str, text: str, finish: str | None) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }


def chat_response(
    rid: str, model: str, fingerprint: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(rid: str, model: str, fingerprint: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def usage_chunk(
    rid: str, model: str, fingerprint: str, obj: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """The last chunk of a stream with `stream_options.include_usage`: no choices, the usage."""
    return {
        "id": rid,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def models_response(model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "gptctl"}]}


def describe_validation_error(exc: Any) -> tuple[str, str | None]:
    """(message, param) of a pydantic ValidationError: the first problem, with its field path."""
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    param = ".".join(str(p) for p in first.get("loc", ()) if not str(p).startswith(("function-", "union")))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first.get("type") == "extra_forbidden":
        return f"unrecognized request argument: {param}{more}", param or None
    return f"{param or 'body'}: {first.get('msg')}{more}", param or None
