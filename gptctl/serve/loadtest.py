"""`gptctl serve loadtest`: a bounded load driver for a running server (threads over httpx, streaming).

Each request is a streaming /v1/completions with `include_usage`; time to first token is measured to the
first chunk with text, inter-token latency between the following chunks (one token each from gptctl serve).
Gaps are as the client sees them: tokens faster than the client reads arrive in one read (gaps of ~0 ms);
the server's own figure is /metrics' gptctl_serve_inter_token_latency_seconds.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from gptctl.errors import BadInput


@dataclass
class LoadtestOptions:
    url: str = "http://127.0.0.1:8000"
    requests: int = 32
    concurrency: int = 4
    max_tokens: int = 32
    prompt: str = "The patient was given"
    api_key_env: str | None = None
    timeout: float = 60.0
    model: str | None = None  # default: the first of /v1/models
    ignore_eos: bool = False  # every request decodes max_tokens (vLLM's and llama-server's extension)


@dataclass
class LoadtestReport:
    requests: int
    ok: int
    failed: int
    wall_s: float
    completion_tokens: int
    tokens_per_s: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    fingerprints: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first few

    def lines(self) -> list[str]:
        def ms(v):
            return "-" if v is None else f"{v:.1f} ms"

        return [
            f"requests: {self.ok} ok, {self.failed} failed (of {self.requests}) in {self.wall_s:.2f} s",
            f"throughput: {self.tokens_per_s:.1f} tok/s ({self.completion_tokens} tokens)",
            f"time to first token: p50 {ms(self.ttft_p50_ms)}, p95 {ms(self.ttft_p95_ms)}",
            f"inter-token latency: p50 {ms(self.itl_p50_ms)}, p95 {ms(self.itl_p95_ms)}",
            f"versions seen: {', '.join(self.fingerprints) or '-'}",
            *[f"error: {e}" for e in self.errors],
        ]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@dataclass
class _One:
    ok: bool
    tokens: int = 0
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    fingerprint: str | None = None
    error: str | None = None


def _one(client, opts: LoadtestOptions, model: str) -> _One:
    body = {
        "model": model,
        "prompt": opts.prompt,
        "max_tokens": opts.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if opts.ignore_eos:
        body["ignore_eos"] = True
    started = time.perf_counter()
    last, result = None, _One(ok=False)
    try:
        with client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                return _One(ok=False, error=f"HTTP {response.status_code}: {response.read()[:200]!r}")
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return _One(ok=False, error=str(chunk["error"].get("message")))
                result.fingerprint = chunk.get("system_fingerprint")
                if chunk.get("usage"):
                    result.tokens = chunk["usage"]["completion_tokens"]
                if any(c.get("text") for c in chunk.get("choices", [])):
                    now = time.perf_counter()
                    if last is None:
                        result.ttft = now - started
                    else:
                        result.gaps.append(now - last)
                    last = now
    except Exception as exc:  # noqa: BLE001 - a failed request is counted, not raised
        return _One(ok=False, error=f"{type(exc).__name__}: {exc}")
    result.ok = True
    return result


def _model(client, opts: LoadtestOptions) -> str:
    if opts.model:
        return opts.model
    try:
        response = client.get("/v1/models")
        response.raise_for_status()
        return response.json()["data"][0]["id"]
    except Exception as exc:  # noqa: BLE001 - unreachable or not an OpenAI server
        raise BadInput(f"cannot list the models of {opts.url}: {exc}", "check --url and --api-key-env") from exc


def run_loadtest(opts: LoadtestOptions) -> LoadtestReport:
    """Send `opts.requests` streaming completions, `opts.concurrency` at a time; measure them."""
    import httpx

    from gptctl.serve.client import auth_headers

    if opts.requests < 1 or opts.concurrency < 1 or opts.max_tokens < 1:
        raise BadInput("--requests, --concurrency and --max-tokens must be >= 1")
    local = threading.local()
    clients: list = []

    def client():
        if not hasattr(local, "client"):
            local.client = httpx.Client(
                base_url=opts.url.rstrip("/"), headers=auth_headers(opts.api_key_env), timeout=opts.timeout
            )
            clients.append(local.client)
        return local.client

    model = _model(client(), opts)
    started = time.perf_counter()
    with ThreadPoolExecutor(opts.concurrency) as pool:
        results = list(pool.map(lambda _: _one(client(), opts, model), range(opts.requests)))
    wall = time.perf_counter() - started
    for c in clients:
        c.close()
    ok = [r for r in results if r.ok]
    ttft = [1000 * r.ttft for r in ok if r.ttft is not None]
    gaps = [1000 * g for r in ok for g in r.gaps]
    tokens = sum(r.tokens for r in ok)
    return LoadtestReport(
        requests=len(results),
        ok=len(ok),
        failed=len(results) - len(ok),
        wall_s=round(wall, 3),
        completion_tokens=tokens,
        tokens_per_s=round(tokens / wall, 2) if wall > 0 else 0.0,
        ttft_p50_ms=percentile(ttft, 50),
        ttft_p95_ms=percentile(ttft, 95),
        itl_p50_ms=percentile(gaps, 50),
        itl_p95_ms=percentile(gaps, 95),
        fingerprints=sorted({r.fingerprint for r in ok if r.fingerprint}),
        errors=[r.error for r in results if r.error][:5],
    )
