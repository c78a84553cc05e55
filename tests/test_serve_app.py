"""The HTTP service end to end on 127.0.0.1, with the real `openai` client: completions and chat, streaming
or not, equal to batch-1 greedy; concurrency; disconnects; 429; auth; bad requests; health and metrics;
keep-alive comments; draining."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from serve_support import LiveServer, SlowSession, exported_llama

MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return exported_llama(tmp_path_factory)


def make_state(artifact, *, max_batch=4, max_queued=8, api_key=None, keepalive_s=5.0):
    from gptctl.serve.app import ServeState
    from gptctl.serve.metrics import EngineObserver, ServeMetrics
    from gptctl.serve.versions import Deployment, LoadOptions, load_version

    metrics = ServeMetrics()
    opts = LoadOptions(max_batch=max_batch, max_queued=max_queued)
    observer = EngineObserver(metrics)
    deployment = Deployment(load_version(artifact, opts, observer), opts, observer)
    return ServeState(
        model_name=MODEL, metrics=metrics, deployment=deployment, api_key=api_key, keepalive_s=keepalive_s
    )


@pytest.fixture(scope="module")
def server(artifact):
    state = make_state(artifact)
    with LiveServer(state) as live:
        yield live
    state.deployment.close()


def client(live, **kw):
    from openai import OpenAI

    return OpenAI(base_url=live.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, timeout=20, **kw)


def reference(version, ids, n):
    """Batch-1 greedy through `lm.greedy`, cut at the first end-of-sequence id, as text."""
    lm = version.engine.lm
    out = lm.greedy(np.array([ids], dtype=np.int64), n)[0].tolist()
    for i, t in enumerate(out):
        if t in version.stop_ids:
            out = out[:i]
            break
    return version.tokenizer.decode(out), len(out)


PROMPTS = [
    "The doctor",
    "A nurse measured the blood pressure",
    "Fever, cough and fatigue are common symptoms of",
    "The",
]


def test_completions_equal_batch1_greedy_streaming_or_not(server):
    version = server.state.deployment.current
    c = client(server)
    for prompt in PROMPTS[:2]:
        want, n = reference(version, version.tokenizer(prompt)["input_ids"], 12)
        got = c.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0)
        assert got.choices[0].text == want and got.usage.completion_tokens == n
        assert got.system_fingerprint == version.fingerprint and got.choices[0].finish_reason in ("length", "stop")
        chunks = list(
            c.completions.create(
                model=MODEL,
                prompt=prompt,
                max_tokens=12,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == want
        assert chunks[-1].usage.completion_tokens == n and not chunks[-1].choices
        assert {ch.system_fingerprint for ch in chunks} == {version.fingerprint}
    assert len({reference(version, version.tokenizer(p)["input_ids"], 12)[0] for p in PROMPTS}) == len(PROMPTS)


def test_chat_equals_batch1_greedy_over_the_chat_template(server):
    version = server.state.deployment.current
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The patient was given"}]
    ids = version.tokenizer.apply_chat_template(messages)
    want, n = reference(version, ids, 10)
    c = client(server)
    got = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    assert got.choices[0].message.content == want and got.choices[0].message.role == "assistant"
    assert got.usage.prompt_tokens == len(ids) and got.usage.completion_tokens == n
    chunks = list(c.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == want
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_concurrent_requests_of_different_lengths_equal_their_batch1_outputs(server):
    version = server.state.deployment.current
    c = client(server)
    jobs = [(p, n) for p, n in zip(PROMPTS * 2, [9, 14, 6, 11, 13, 5, 8, 10], strict=True)]

    def one(job):
        prompt, n = job
        return c.completions.create(model=MODEL, prompt=prompt, max_tokens=n, temperature=0).choices[0].text

    steps = version.engine.steps
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, jobs))
    assert got == [reference(version, version.tokenizer(p)["input_ids"], n)[0] for p, n in jobs]
    assert version.engine.steps - steps < sum(n for _, n in jobs)  # some steps decoded several rows


def test_stop_strings_cut_the_text(server):
    version = server.state.deployment.current
    full, _ = reference(version, version.tokenizer(PROMPTS[1])["input_ids"], 20)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    c = client(server)
    got = c.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=20, temperature=0, stop=[stop, "@@@"])
    assert got.choices[0].text == full[: full.index(stop)] and got.choices[0].finish_reason == "stop"
    chunks = list(
        c.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=20, temperature=0, stop=stop, stream=True)
    )
    assert "".join(ch.choices[0].text for ch in chunks) == full[: full.index(stop)]


def test_seeded_sampling_repeats(server):
    c = client(server)
    runs = [
        c.completions.create(model=MODEL, prompt="The", max_tokens=12, temperature=1.0, top_p=0.9, seed=s)
        .choices[0]
        .text
        for s in (3, 3, 4)
    ]
    assert runs[0] == runs[1] != runs[2]


@pytest.mark.parametrize(
    "body, status, param",
    [
        (b'{"model": "tiny-llama", "prompt": ', 400, None),  # malformed JSON
        (b"[1, 2]", 400, None),  # not an object
        (b'{"model": "tiny-llama", "prompt": "x", "max_tokens": "5"}', 400, "max_tokens"),
        (b'{"model": "tiny-llama", "prompt": "x", "max_tokens": -3}', 400, "max_tokens"),
        (b'{"model": "tiny-llama", "prompt": "x", "temperature": "hot"}', 400, "temperature"),
        (b'{"model": "tiny-llama", "prompt": "x", "n": 2}', 400, "n"),
        (b'{"model": "tiny-llama", "prompt": "x", "logprobs": 2}', 400, "logprobs"),
        (b'{"model": "tiny-llama", "prompt": "x", "frobnicate": 1}', 400, "frobnicate"),
        (b'{"model": "tiny-llama", "prompt": "", "max_tokens": 2}', 400, "prompt"),
        (b'{"model": "tiny-llama", "prompt": [1, 99999]}', 400, "prompt"),
        (b'{"model": "tiny-llama", "prompt": "\\ud800"}', 400, "prompt"),  # a lone surrogate
        (b'{"model": "tiny-llama", "prompt": "caf\xe9"}', 400, None),  # latin-1 bytes: invalid UTF-8
        (b'{"model": "gpt-9", "prompt": "x"}', 404, "model"),
        (b'{"prompt": "x"}', 400, "model"),
    ],
)
def test_bad_completion_requests_are_openai_shaped_4xx(server, body, status, param):
    r = httpx.post(server.url + "/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ],
)
def test_bad_chat_requests_are_4xx(server, extra, param):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}
    r = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_oversized_bodies_and_prompts_past_the_context_window(server):
    from openai import BadRequestError

    r = httpx.post(server.url + "/v1/completions", content=b'{"prompt": "' + b"a" * (2 << 20) + b'"}')
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
    c = client(server)
    with pytest.raises(BadRequestError) as info:
        c.completions.create(model=MODEL, prompt=[5] * 130, max_tokens=1)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(BadRequestError):
        c.completions.create(model=MODEL, prompt=[5] * 100, max_tokens=40)
    assert c.completions.create(model=MODEL, prompt=[5] * 100, max_tokens=28, temperature=0).usage.total_tokens <= 128
    assert httpx.get(server.url + "/nope").json()["error"]["type"] == "not_found_error"


def test_health_ready_models_and_metrics(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/health/ready")
    assert ready.status_code == 200 and ready.json()["batching"]["enabled"] is True
    assert ready.json()["version"] == server.state.deployment.current.fingerprint
    assert [m.id for m in client(server).models.list()] == [MODEL]
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "gptctl_serve_requests_running",
        "gptctl_serve_requests_waiting",
        "gptctl_serve_requests_total",
        "gptctl_serve_rejected_total",
        "gptctl_serve_cancelled_total",
        "gptctl_serve_time_to_first_token_seconds_count",
        "gptctl_serve_inter_token_latency_seconds_count",
        "gptctl_serve_batch_size_count",
        "gptctl_serve_batching_enabled 1.0",
    ):
        assert name in text, name
    assert f'fingerprint="{server.state.deployment.current.fingerprint}"' in text and 'state="serving"' in text
    assert 'route="/v1/completions",status="200"' in text


def slowed(state, delay):
    lm = state.deployment.current.engine.lm
    lm.session = SlowSession(lm.session, delay)
    return lm


def test_a_client_that_disconnects_mid_stream_frees_its_slot(artifact):
    state = make_state(artifact, max_batch=2)
    slowed(state, 0.01)
    engine = state.deployment.current.engine
    body = {"model": MODEL, "prompt": "The doctor", "max_tokens": 100, "temperature": 0, "stream": True}
    with LiveServer(state) as live:
        with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=10) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(3)]
            assert engine.stats().running == 1
        deadline = time.monotonic() + 3
        while engine.stats().running and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = engine.stats()
    state.deployment.close()
    assert got[0].startswith("data: ")
    assert stats.running == 0 and stats.finished.get("cancelled") == 1 and stats.steps < 60
    assert state.metrics.cancelled._value.get() == 1


def test_a_full_queue_answers_429_with_retry_after(artifact):
    from openai import RateLimitError

    state = make_state(artifact, max_batch=1, max_queued=0)
    slowed(state, 0.01)
    body = {"model": MODEL, "prompt": "The doctor", "max_tokens": 60, "temperature": 0, "stream": True}
    with LiveServer(state) as live:
        with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=10) as r:
            lines = r.iter_lines()  # kept: a dropped iterator closes the connection (a disconnect)
            next(lines)
            with pytest.raises(RateLimitError):
                client(live).completions.create(model=MODEL, prompt="x", max_tokens=2)
            raw = httpx.post(live.url + "/v1/completions", json={"model": MODEL, "prompt": "x"})
            assert raw.status_code == 429 and raw.headers["retry-after"] == "1"
        ok = client(live).completions.create(model=MODEL, prompt="x", max_tokens=2)  # the server kept serving
    state.deployment.close()
    assert ok.choices[0].finish_reason in ("length", "stop")


def test_api_key_guards_every_route_but_health(artifact):
    from openai import AuthenticationError

    state = make_state(artifact, api_key="s3cret")
    with LiveServer(state) as live:
        with pytest.raises(AuthenticationError):
            client(live, api_key="wrong").completions.create(model=MODEL, prompt="x", max_tokens=2)
        assert httpx.get(live.url + "/metrics").status_code == 401
        assert httpx.get(live.url + "/v1/models").json()["error"]["type"] == "authentication_error"
        assert httpx.get(live.url + "/health").status_code == 200
        ok = client(live, api_key="s3cret").completions.create(model=MODEL, prompt="x", max_tokens=2)
    state.deployment.close()
    assert ok.usage.completion_tokens >= 1


def test_keep_alive_comments_while_the_first_token_is_slow(artifact):
    state = make_state(artifact, keepalive_s=0.05)
    slowed(state, 0.25)
    body = {"model": MODEL, "prompt": "The", "max_tokens": 2, "temperature": 0, "stream": True}
    with LiveServer(state) as live:
        text = httpx.post(live.url + "/v1/completions", json=body, timeout=10).text
    state.deployment.close()
    assert text.index(": keep-alive") < text.index("data: {")
    assert text.rstrip().endswith("data: [DONE]")


def test_drain_turns_ready_503_finishes_in_flight_then_exits(artifact):
    from gptctl.serve.server import _DrainingServer

    state = make_state(artifact)
    slowed(state, 0.01)
    live = LiveServer(state)
    import uvicorn

    live.server = _DrainingServer(live.server.config, state, drain_timeout_s=10)
    live.thread = threading.Thread(target=live.server.run, daemon=True)
    body = {"model": MODEL, "prompt": "The doctor", "max_tokens": 40, "temperature": 0, "stream": True}
    with live:
        with httpx.stream("POST", live.url + "/v1/completions", json=body, timeout=10) as r:
            lines = r.iter_lines()
            next(lines)
            live.server.handle_exit(15, None)  # what SIGTERM calls
            ready = httpx.get(live.url + "/health/ready")
            refused = httpx.post(live.url + "/v1/completions", json={"model": MODEL, "prompt": "x"})
            rest = [line for line in lines if line]
        live.thread.join(10)
        exited = not live.thread.is_alive()
    assert isinstance(live.server, uvicorn.Server)
    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "service_unavailable"
    assert rest[-1] == "data: [DONE]" and '"finish_reason": "length"' in "".join(rest)
    assert exited
    state.deployment.close()


def test_ignore_eos_decodes_max_tokens_past_the_end_of_sequence(server):
    # Make the 3rd greedy token an end-of-sequence id for this test: without ignore_eos the answer stops there.
    version = server.state.deployment.current
    ids = version.tokenizer(PROMPTS[1])["input_ids"]
    out = version.engine.lm.greedy(np.array([ids], dtype=np.int64), 8)[0].tolist()
    saved = version.stop_ids
    version.stop_ids = (*saved, out[2])
    try:
        c = client(server)
        cut = c.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=8, temperature=0)
        full = c.completions.create(
            model=MODEL, prompt=PROMPTS[1], max_tokens=8, temperature=0, extra_body={"ignore_eos": True}
        )
    finally:
        version.stop_ids = saved
    assert cut.usage.completion_tokens == 2 and cut.choices[0].finish_reason == "stop"
    assert full.usage.completion_tokens == 8 and full.choices[0].finish_reason == "length"
    assert full.choices[0].text == version.tokenizer.decode(out)
