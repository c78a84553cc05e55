"""`gptctl serve ARTIFACT --replicas N`: worker processes behind a router. A replica killed with -9 under load
fails no request that had not started and is replaced; outputs stay batch-1 greedy; swaps go through every
replica with one version per response; the router picks the least busy replica and sums /metrics."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serve_support import exported_llama, free_port
from test_serve_app import reference

MODEL = "tiny"
PROMPTS = ["The doctor", "A nurse measured the blood pressure", "Fever, cough and", "The clinic opens at"]
TOKENS = 60  # long enough that requests are in flight on the replica when it is killed


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return exported_llama(tmp_path_factory)


@pytest.fixture(scope="module")
def refs(artifact):
    from gptctl.serve.versions import LoadOptions, load_version

    version = load_version(artifact, LoadOptions(check_batching=False))
    try:
        return {p: reference(version, version.tokenizer(p)["input_ids"], TOKENS)[0] for p in PROMPTS}
    finally:
        version.engine.stop()


@pytest.fixture(scope="module")
def router(artifact):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gptctl",
            "serve",
            str(artifact),
            "--port",
            str(port),
            "--replicas",
            "2",
            "--max-batch",
            "4",
            "--model-name",
            MODEL,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"the router was not ready in 60 s: {proc.stderr.read() if proc.poll() is not None else ''}")
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def _one(url, prompt, stream):
    """(ok, started, text, fingerprints): `started` once a token has arrived."""
    body = {"model": MODEL, "prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "stream": stream}
    started, text, fps = False, "", set()
    try:
        if not stream:
            r = httpx.post(url + "/v1/completions", json=body, timeout=60)
            if r.status_code != 200:
                return False, False, r.text, fps
            return True, True, r.json()["choices"][0]["text"], {r.json()["system_fingerprint"]}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            if r.status_code != 200:
                return False, False, r.read().decode(), fps
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        return False, started, chunk["error"]["message"], fps
                    fps.add(chunk["system_fingerprint"])
                    piece = chunk["choices"][0]["text"] if chunk.get("choices") else ""
                    started = started or bool(piece)
                    text += piece
        return True, started, text, fps
    except httpx.HTTPError as exc:
        return False, started, repr(exc), fps


def _ready(url):
    return httpx.get(url + "/health/ready", timeout=5).json()


def test_a_replica_killed_under_load_fails_no_unstarted_request_and_is_replaced(router, refs):
    proc, url = router
    before = _ready(url)["replicas"]
    victim = before[0]["pid"]
    jobs = [(PROMPTS[i % len(PROMPTS)], i % 2 == 0) for i in range(40)]
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(_one, url, p, s) for p, s in jobs]
        deadline = time.monotonic() + 20
        while _ready(url)["replicas"][0]["inflight"] == 0:  # kill it with work on it
            assert time.monotonic() < deadline, "replica 0 never had a request in flight"
        os.kill(victim, signal.SIGKILL)
        results = [f.result(timeout=90) for f in futures]
    failed = [(job, r) for job, r in zip(jobs, results, strict=True) if not r[0]]
    assert all(r[1] and job[1] for job, r in failed), failed  # only streams that had begun may fail
    assert len(failed) < len(jobs) // 2
    for (prompt, _), (ok, _, text, fps) in zip(jobs, results, strict=True):
        if ok:
            assert text == refs[prompt] and len(fps) == 1
    deadline = time.monotonic() + 30
    while True:
        now = _ready(url)
        if now["ready_replicas"] == 2 and now["replicas"][0]["pid"] != victim:
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.1)
    assert now["restarts"] == 1 and now["replicas"][0]["restarts"] == 1
    assert now["replicas"][1]["pid"] == before[1]["pid"]  # the other replica was left alone
    assert _one(url, PROMPTS[0], True)[2] == refs[PROMPTS[0]]
    metrics = httpx.get(url + "/metrics").text
    assert "gptctl_serve_replica_restarts 1.0" in metrics and "gptctl_serve_replicas_ready 2.0" in metrics
    retried = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gptctl_serve_router_retries_total")
    )
    assert retried + len(failed) >= 1  # the kill did hit requests in flight: retried, or failed mid-stream


def _relabelled_copy(src: Path, dst: Path) -> Path:
    """The same graph under another fingerprint (the manifest's output hash changed): a second version, cheaply."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "gptctl.json").read_text())
    for info in manifest["outputs"].values():
        info["sha256"] = "0" * 64
    (dst / "gptctl.json").write_text(json.dumps(manifest))
    return dst


def test_a_swap_through_the_router_swaps_every_replica_one_version_per_response(router, artifact, tmp_path, refs):
    proc, url = router
    old = _ready(url)["version"]
    v2 = _relabelled_copy(artifact, tmp_path / "v2")
    stop, results = threading.Event(), []

    def load():
        while not stop.is_set():
            results.append(_one(url, PROMPTS[1], True))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    swapped = httpx.post(url + "/admin/swap", json={"artifact": str(v2)}, timeout=120)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(60)
    assert swapped.status_code == 200, swapped.text
    body = swapped.json()
    assert body["previous"] == old and body["current"] != old and len(body["replicas"]) == 2
    after = _ready(url)
    assert after["versions"] == [body["current"]] and {r["artifact"] for r in after["replicas"]} == {str(v2)}
    assert results and all(ok and len(fps) == 1 and text == refs[PROMPTS[1]] for ok, _, text, fps in results)
    broken = _relabelled_copy(artifact, tmp_path / "unvalidated")
    manifest = json.loads((broken / "gptctl.json").read_text())
    manifest["validation"]["passed"] = False
    (broken / "gptctl.json").write_text(json.dumps(manifest))
    refused = httpx.post(url + "/admin/swap", json={"artifact": str(broken)}, timeout=120)
    assert refused.status_code == 422 and "replica 0" in refused.json()["error"]["message"]
    assert _ready(url)["versions"] == [body["current"]]


def test_sigterm_drains_the_router_and_stops_every_replica(router):
    proc, url = router
    pids = [r["pid"] for r in _ready(url)["replicas"]]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "ready: tiny, 2 replicas" in err
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, [p for p in pids if _alive(p)]
        time.sleep(0.1)


def test_the_router_picks_the_ready_replica_with_least_work():
    from gptctl.serve.replicas import ReplicaOptions, ReplicaSet

    rs = ReplicaSet(ReplicaOptions(artifact="x", model_name="m"), 3)
    assert rs.pick() is None  # nothing ready yet
    a, b, c = rs.replicas
    a.ready = b.ready = True
    a.inflight, b.inflight = 2, 1
    assert rs.pick() is b
    c.ready = True
    assert rs.pick() is c
    assert rs.pick(exclude={2}) is b
    c.inflight = 1
    c.assigned, b.assigned = 5, 3
    assert rs.pick() is b  # equal in-flight: the one given fewer requests
    a.ready = b.ready = False
    assert rs.pick(exclude={2}) is c  # the only ready one, even if tried


def test_stream_events_that_start_a_response():
    from gptctl.serve.router import _event

    assert _event(": keep-alive") == "comment"
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    assert _event("data: " + json.dumps(role)) == "head"
    assert _event("data: " + json.dumps({"choices": [{"delta": {"content": "Hi"}}]})) == "token"
    assert _event("data: " + json.dumps({"choices": [{"text": "a", "finish_reason": None}]})) == "token"
    assert _event("data: " + json.dumps({"error": {"message": "x"}})) == "error"
    assert _event("data: [DONE]") == "token"


def test_metrics_of_replicas_are_summed():
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from gptctl.serve.metrics import merge_expositions

    texts = []
    for n in (2, 3):
        r = CollectorRegistry()
        c = Counter("gptctl_serve_requests", "x", ["route"], registry=r)
        c.labels("/v1/completions").inc(n)
        h = Histogram("gptctl_serve_ttft_seconds", "y", buckets=(0.1, 1), registry=r)
        h.observe(0.05 * n)
        texts.append(generate_latest(r).decode())
    merged = merge_expositions(texts)
    assert 'gptctl_serve_requests_total{route="/v1/completions"} 5.0' in merged
    assert 'gptctl_serve_ttft_seconds_bucket{le="0.1"} 1.0' in merged
    assert "gptctl_serve_ttft_seconds_count 2.0" in merged and "_created" not in merged
