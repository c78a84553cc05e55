"""Zero-downtime swaps under load (`POST /admin/swap` through `gptctl serve swap`), corrupt swaps that leave
the old version serving, and `gptctl serve loadtest` against a live server."""

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_support import LiveServer, SlowSession, exported_llama
from test_serve_app import MODEL, client, make_state, reference
from typer.testing import CliRunner

from gptctl.cli.app import app


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    return exported_llama(tmp_path_factory, seed=0)


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    return exported_llama(tmp_path_factory, seed=1)


@pytest.fixture()
def server(v1):
    state = make_state(v1, max_batch=4, max_queued=16)
    lm = state.deployment.current.engine.lm
    lm.session = SlowSession(lm.session, 0.003)  # requests last long enough to be in flight during the swap
    with LiveServer(state) as live:
        yield live
    state.deployment.close()


def swap_cli(url, artifact):
    return CliRunner().invoke(app, ["serve", "swap", str(artifact), "--url", url, "--json"])


def test_swap_under_load_fails_no_request_and_no_request_sees_two_versions(server, v2):
    old = server.state.deployment.current
    c = client(server)
    prompts = ["The doctor", "A nurse measured", "Fever, cough and", "The clinic opens at"] * 6
    # The old version is freed after the swap: its reference outputs are computed now.
    old_refs = {p: reference(old, old.tokenizer(p)["input_ids"], 10)[0] for p in set(prompts)}
    started = threading.Event()

    def one(i):
        if i == 6:
            started.set()
        stream = i % 2 == 0
        got = c.completions.create(model=MODEL, prompt=prompts[i], max_tokens=10, temperature=0, stream=stream)
        if stream:
            chunks = list(got)
            fps = {ch.system_fingerprint for ch in chunks}
            return prompts[i], "".join(ch.choices[0].text for ch in chunks if ch.choices), fps
        return prompts[i], got.choices[0].text, {got.system_fingerprint}

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one, i) for i in range(len(prompts))]
        assert started.wait(20)
        res = swap_cli(server.url, v2)
        results = [f.result(timeout=30) for f in futures]
    assert res.exit_code == 0, res.output
    swapped = json.loads(res.stdout)
    new = server.state.deployment.current
    assert swapped == {"previous": old.fingerprint, "current": new.fingerprint, "artifact": str(v2)}
    assert new.fingerprint != old.fingerprint
    by_fp = {old.fingerprint: old, new.fingerprint: new}
    seen = set()
    for prompt, text, fps in results:
        assert len(fps) == 1, fps  # every chunk of a stream from one version
        fp = fps.pop()
        seen.add(fp)
        want = old_refs[prompt] if fp == old.fingerprint else reference(new, new.tokenizer(prompt)["input_ids"], 10)[0]
        assert text == want, (prompt, fp)
    assert seen == set(by_fp)  # the load really spanned the swap
    after = c.completions.create(model=MODEL, prompt="The", max_tokens=2, temperature=0)
    assert after.system_fingerprint == new.fingerprint
    deadline = time.monotonic() + 5
    while old.state != "freed" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert old.state == "freed" and old.engine.lm is None and not server.state.deployment.retired


def corrupt_copy(src, dst, how):
    shutil.copytree(src, dst)
    if how == "truncated":
        data = (dst / "model.onnx").read_bytes()
        (dst / "model.onnx").write_bytes(data[: len(data) // 3])
    elif how == "unvalidated":
        manifest = json.loads((dst / "gptctl.json").read_text())
        manifest["validation"]["passed"] = False
        (dst / "gptctl.json").write_text(json.dumps(manifest))
    elif how == "no-tokenizer":
        (dst / "tokenizer.json").write_text("{not json")
    return dst


@pytest.mark.parametrize("how", ["truncated", "unvalidated", "no-tokenizer", "missing"])
def test_a_failed_swap_leaves_the_old_version_serving(server, v2, tmp_path, how):
    old = server.state.deployment.current
    target = tmp_path / "missing" if how == "missing" else corrupt_copy(v2, tmp_path / how, how)
    res = swap_cli(server.url, target)
    assert res.exit_code == 1, res.output
    assert "swap" in json.loads(res.stdout)["error"]
    assert server.state.deployment.current is old and old.state == "serving"
    ready = httpx.get(server.url + "/health/ready").json()
    assert ready["status"] == "ready" and ready["version"] == old.fingerprint and ready["loading"] is None
    got = client(server).completions.create(model=MODEL, prompt="The", max_tokens=3, temperature=0)
    assert got.system_fingerprint == old.fingerprint


def test_swap_requests_are_validated(server):
    r = httpx.post(server.url + "/admin/swap", json={"path": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "artifact"


def test_loadtest_reports_throughput_and_latency(server):
    res = CliRunner().invoke(
        app,
        [
            "serve",
            "loadtest",
            "--url",
            server.url,
            "--requests",
            "8",
            "--concurrency",
            "4",
            "--max-tokens",
            "6",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["ok"] == 8 and report["failed"] == 0
    assert report["completion_tokens"] == 8 * 6  # the prompt's greedy continuation has no end-of-sequence
    assert report["tokens_per_s"] > 0 and report["ttft_p50_ms"] <= report["ttft_p95_ms"]
    assert report["itl_p50_ms"] is not None
    assert report["fingerprints"] == [server.state.deployment.current.fingerprint]
