"""gptctl's int4/int8 ONNX exports side by side with llama.cpp's Q4_K_M, Q4_0 and Q8_0 of the same model.

The same model directory (default: the quickstart's pruned SmolLM2-135M, `runs/quickstart/prune`) is
converted to GGUF with llama.cpp's `convert_hf_to_gguf.py` and quantized with `llama_cpp.llama_model_quantize`,
and exported with `gptctl export --quantize ...`. Then every artifact runs in its own process, interleaved
for N rounds (2 threads, batch 1, the same 32-token prompt, 128 greedy tokens), and the script prints per
artifact: decode tok/s (median, min-max), prefill ms, RSS after load, perplexity through the runtime's own
logits on the same eval text and token ids (llama_cpp with logits_all=True), file size, and ratios to Q4_K_M.

Needs the optional extra: `pip install 'gptctl[peers]'` (llama-cpp-python; on CPUs with AMX build it with
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"), and the
converter from llama.cpp's source (`--converter`, or $LLAMA_CPP_CONVERTER; the llama-cpp-python sdist has it
at vendor/llama.cpp/convert_hf_to_gguf.py with its gguf-py beside it).

Run: python benchmarks/bench_peers.py [--rounds 5] [--model DIR] [--eval-data FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_MODEL = ROOT / "runs" / "quickstart" / "prune"
DEFAULT_EVAL = ROOT / "recipes" / "data" / "pharmacy-notes-eval.txt"
DEFAULT_CALIBRATION = ROOT / "recipes" / "data" / "pharmacy-notes.txt"
LLAMA_TYPES = ("Q4_K_M", "Q4_0", "Q8_0")
GPTCTL_METHODS = ("int4", "int4-mixed", "int4-gptq", "int8")
PROMPT = (
    "The pharmacist checks the prescription, the dose and the patient's allergies before the medicine is "
    "handed over, and writes a short note for the next shift about anything that"
)
MISSING_EXTRA = (
    "bench_peers needs llama-cpp-python: pip install 'gptctl[peers]' (on AMX CPUs: CMAKE_ARGS=\"-DGGML_NATIVE=OFF "
    '-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" pip install llama-cpp-python).'
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a save_pretrained model directory")
    p.add_argument("--eval-data", type=Path, default=DEFAULT_EVAL, help="text for perplexity (same ids everywhere)")
    p.add_argument(
        "--calibration-data",
        type=Path,
        default=DEFAULT_CALIBRATION,
        help="gptctl's --calibration-data for methods that take it (not the eval text)",
    )
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds, one process per artifact per round")
    p.add_argument("--tokens", type=int, default=128, help="greedy tokens decoded per run")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "gptctl-bench-peers")
    p.add_argument(
        "--converter",
        type=Path,
        default=os.environ.get("LLAMA_CPP_CONVERTER"),
        help="llama.cpp's convert_hf_to_gguf.py (default $LLAMA_CPP_CONVERTER)",
    )
    p.add_argument("--llama-types", default=",".join(LLAMA_TYPES), help="llama.cpp quantization types")
    p.add_argument(
        "--gptctl-methods",
        default=",".join(GPTCTL_METHODS),
        help="gptctl --quantize methods, comma-separated; METHOD:--flag value adds export flags (ablations)",
    )
    p.add_argument(
        "--quality-only",
        action="store_true",
        help="perplexity and size only, no timed runs (perplexity is not timing-sensitive: a shared machine will do)",
    )
    p.add_argument("--worker", nargs=2, metavar=("RUNTIME", "PATH"), help=argparse.SUPPRESS)
    p.add_argument("--perplexity", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--save-logp", help=argparse.SUPPRESS)
    p.add_argument("--ref-logp", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.tokens < 1 or args.prompt_tokens < 1 or args.threads < 1:
        p.error("--rounds, --tokens, --prompt-tokens and --threads must be >= 1")
    return args


def have_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


# ---- worker side: one artifact, one process ---------------------------------------------------------


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _token_ids(model_dir: Path, eval_path: Path, prompt_tokens: int):
    from gptctl.evaluation import eval_samples, load_eval_records
    from gptctl.model_source import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(str(model_dir)))
    prompt = tok(PROMPT, add_special_tokens=False)["input_ids"]
    while len(prompt) < prompt_tokens:
        prompt = prompt + prompt
    samples = eval_samples(tok, load_eval_records(str(eval_path)), vocab_size=len(tok), path=str(eval_path))
    return prompt[:prompt_tokens], samples


def _logp(logits, sample):
    """Log-probabilities [scored positions, vocab] of the next token, and the targets, of one sample."""
    import numpy as np

    from gptctl.evaluation.records import IGNORE

    targets = np.asarray(sample.labels[1:], dtype=np.int64)
    keep = targets != IGNORE
    x = np.asarray(logits[:-1], dtype=np.float64)[keep]
    x -= x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True)), targets[keep]


def _score(all_logits: list, samples, args) -> dict:
    """Perplexity, and against the same runtime's fp32 log-probabilities (--ref-logp, written by its own
    --save-logp run) the mean KL(fp32 || this) per token and the top-1 agreement: on a ~350-token eval text
    perplexity moves a few percent either way by chance, the KL to fp32 does not."""
    import numpy as np

    rows = [_logp(x, s) for x, s in zip(all_logits, samples, strict=True)]
    logp = np.concatenate([r[0] for r in rows])
    targets = np.concatenate([r[1] for r in rows])
    out = {"ppl": float(np.exp(-logp[np.arange(len(logp)), targets].mean())), "tokens": int(len(targets))}
    if args.save_logp:
        np.save(args.save_logp, logp.astype(np.float32))
    if args.ref_logp:
        ref = np.load(args.ref_logp).astype(np.float64)
        out["kl"] = float((np.exp(ref) * (ref - logp)).sum(-1).mean())
        out["top1"] = float((ref.argmax(-1) == logp.argmax(-1)).mean())
    return out


def _llama_worker(path: Path, prompt: list[int], samples, args) -> dict:
    import numpy as np
    from llama_cpp import Llama

    t = time.perf_counter()
    llm = Llama(
        model_path=str(path),
        n_ctx=1024,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        logits_all=args.perplexity,
        verbose=False,
    )
    out = {"load_s": time.perf_counter() - t, "rss_mb": _rss_mb()}
    if args.perplexity:
        logits = []
        for s in samples:
            llm.reset()
            llm.eval(list(s.input_ids))
            logits.append(np.array(llm.scores[: len(s.input_ids)]))
        return {**out, **_score(logits, samples, args)}
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    out["prefill_ms"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    for _ in range(args.tokens - 1):
        llm.eval([token])
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    out["decode_tok_s"] = (args.tokens - 1) / (time.perf_counter() - t)
    return out


def _onnx_worker(path: Path, prompt: list[int], samples, args) -> dict:
    import numpy as np

    from gptctl.runtime.session import OrtCausalLM

    t = time.perf_counter()
    lm, _ = OrtCausalLM.from_path(path / "model.onnx", "cpu", threads=args.threads)
    out = {"load_s": time.perf_counter() - t, "rss_mb": _rss_mb()}
    if args.perplexity:
        logits = [lm.forward(np.asarray([s.input_ids], dtype=np.int64))[0]["logits"][0] for s in samples]
        return {**out, **_score(logits, samples, args)}
    timings: list[float] = []
    t = time.perf_counter()
    lm.greedy(np.asarray([prompt], dtype=np.int64), args.tokens, timings=timings)
    out["prefill_ms"] = (timings[0] - t) * 1000
    out["decode_tok_s"] = (len(timings) - 1) / (timings[-1] - timings[0])
    return out


def worker(args: argparse.Namespace) -> None:
    runtime, path = args.worker
    prompt, samples = _token_ids(args.model, args.eval_data, args.prompt_tokens)
    run = _llama_worker if runtime == "llama.cpp" else _onnx_worker
    print(json.dumps(run(Path(path), prompt, samples, args)))


# ---- driver side --------------------------------------------------------------------------------------


def _converter_path(converter: Path, args: argparse.Namespace) -> list[str]:
    """gguf-py, and for BPE models (no tokenizer.model) without sentencepiece installed a stand-in module:
    the Llama converter imports sentencepiece before it checks for tokenizer.model, then falls back to BPE."""
    import importlib.util

    paths = [str(converter.parent / "gguf-py")]
    if importlib.util.find_spec("sentencepiece") is None and not (args.model / "tokenizer.model").is_file():
        shim = args.work / "shim" / "sentencepiece"
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "__init__.py").write_text(
            "class SentencePieceProcessor:  # stand-in from bench_peers: the model has no tokenizer.model\n"
            "    def __init__(self, *a, **k):\n"
            "        raise FileNotFoundError('sentencepiece is not installed')\n"
        )
        paths.append(str(shim.parent))
    return paths


def convert_and_quantize(args: argparse.Namespace) -> dict[str, Path]:
    """f32 GGUF from the model directory, then each llama.cpp type from it (cached in --work)."""
    import llama_cpp

    if args.converter is None or not Path(args.converter).is_file():
        raise SystemExit("bench_peers: pass --converter PATH/convert_hf_to_gguf.py (or set $LLAMA_CPP_CONVERTER)")
    converter = Path(args.converter)
    f32 = args.work / "model-f32.gguf"
    if not f32.is_file():
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(_converter_path(converter, args))}
        subprocess.run(
            [sys.executable, str(converter), str(args.model), "--outfile", str(f32), "--outtype", "f32"],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    files = {"llama.cpp f32": f32}
    for name in args.llama_types.split(","):
        out = args.work / f"model-{name}.gguf"
        if not out.is_file():
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}")
            params.nthread = args.threads
            rc = llama_cpp.llama_model_quantize(str(f32).encode(), str(out).encode(), params)
            if rc != 0:
                raise SystemExit(f"bench_peers: llama_model_quantize {name} failed ({rc})")
        files[f"llama.cpp {name}"] = out
    return files


def export_gptctl(args: argparse.Namespace) -> dict[str, Path]:
    """fp32 and each --gptctl-methods export (cached in --work), through the same CLI users run."""
    gptctl = [sys.executable, "-m", "gptctl"]
    dirs = {}
    for spec in ["none", *args.gptctl_methods.split(",")]:
        # "METHOD" or "METHOD:--flag value ...": extra export flags for an ablation (e.g. int4:--block-size 64).
        method, _, extra = spec.partition(":")
        label = spec.replace(":", " ").replace("--", "").strip()
        out = args.work / ("gptctl-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in label))
        if not (out / "model.onnx").is_file():
            cmd = [
                *gptctl,
                "export",
                "-m",
                str(args.model),
                "-o",
                str(out),
                "--overwrite",
                "--quantize",
                method,
                "--greedy-tokens",
                "8",
            ]
            if method != "none" and args.calibration_data:
                cmd += ["--calibration-data", str(args.calibration_data)]
            if method != "none":
                # The benchmark measures the loss itself, so export's quality gate must not stop it.
                cmd += ["--min-top1-agreement", "0", "--min-greedy-prefix", "0"]
            subprocess.run(cmd + extra.split(), check=True, stdout=subprocess.DEVNULL)
        dirs["gptctl " + ("fp32" if method == "none" else label)] = out
    return dirs


def _run_worker(args: argparse.Namespace, runtime: str, path: Path, perplexity: bool, logp: list[str] = ()) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        runtime,
        str(path),
        "--model",
        str(args.model),
        "--eval-data",
        str(args.eval_data),
        "--tokens",
        str(args.tokens),
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--threads",
        str(args.threads),
    ] + (["--perplexity", *logp] if perplexity else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.glob("model.onnx*"))


def measure(args: argparse.Namespace, artifacts: dict[str, tuple[str, Path]]) -> dict[str, dict]:
    results = {name: {"runs": [], "bytes": _size(path)} for name, (_, path) in artifacts.items()}
    for name, (runtime, path) in artifacts.items():
        # Each runtime's fp32 artifact comes first in `artifacts` and leaves its log-probabilities behind.
        ref = args.work / f"logp-{runtime}.npy"
        fp32 = name in ("llama.cpp f32", "gptctl fp32")
        logp = ["--save-logp", str(ref)] if fp32 else (["--ref-logp", str(ref)] if ref.is_file() else [])
        results[name].update(_run_worker(args, runtime, path, perplexity=True, logp=logp))
    # Interleaved: drift on a shared machine hits every artifact alike.
    for _ in range(0 if args.quality_only else args.rounds):
        for name, (runtime, path) in artifacts.items():
            results[name]["runs"].append(_run_worker(args, runtime, path, perplexity=False))
    return results


def report(results: dict[str, dict]) -> list[str]:
    base = {
        "llama.cpp": results.get("llama.cpp f32", {}).get("ppl"),
        "gptctl": results.get("gptctl fp32", {}).get("ppl"),
    }
    ref = results.get("llama.cpp Q4_K_M")
    ref_speed = statistics.median(r["decode_tok_s"] for r in ref["runs"]) if ref and ref["runs"] else None
    timed = any(r["runs"] for r in results.values())
    head = f"{'artifact':<30} {'MB':>7} {'size/Q4KM':>9} {'ppl':>8} {'cost':>7} {'KL':>7} {'top1':>6}"
    if timed:
        head += f" {'decode tok/s (min-max)':>24} {'vs Q4KM':>7} {'prefill ms':>10} {'RSS MB':>7}"
    lines = [head if timed else head + f" {'cost/Q4KM':>9}"]
    for name, r in results.items():
        own = base[name.split()[0]]
        cost = f"{100 * (r['ppl'] / own - 1):+.1f}%" if own else "-"
        ref_cost = ref["ppl"] / base["llama.cpp"] - 1 if ref and base["llama.cpp"] else None
        line = (
            f"{name:<30} {r['bytes'] / 1e6:7.1f} {r['bytes'] / ref['bytes'] if ref else float('nan'):9.2f} "
            f"{r['ppl']:8.3f} {cost:>7} {r.get('kl', 0.0):7.4f} {r.get('top1', 1.0):6.3f}"
        )
        if not r["runs"]:  # --quality-only: the cost as a share of Q4_K_M's instead of the timings
            share = (r["ppl"] / own - 1) / ref_cost if own and ref_cost else float("nan")
            lines.append(f"{line} {share:9.2f}")
            continue
        speeds = [x["decode_tok_s"] for x in r["runs"]]
        med = statistics.median(speeds)
        lines.append(
            f"{line} {med:8.1f} ({min(speeds):6.1f}-{max(speeds):6.1f})   "
            f"{med / ref_speed if ref_speed else float('nan'):7.2f} "
            f"{statistics.median(x['prefill_ms'] for x in r['runs']):10.1f} "
            f"{statistics.median(x['rss_mb'] for x in r['runs']):7.0f}"
        )
    lines.append(
        "cost: perplexity vs the same runtime's fp32 (llama.cpp f32 GGUF, gptctl fp32 ONNX); KL: mean KL(fp32 || "
        "artifact) per token, top1: argmax agreement with that fp32, on the eval text; ratios to Q4_K_M measured "
        "in this run"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if not have_llama_cpp():
        print(MISSING_EXTRA, file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    artifacts = {name: ("llama.cpp", p) for name, p in convert_and_quantize(args).items()}
    artifacts.update({name: ("onnx", p) for name, p in export_gptctl(args).items()})
    results = measure(args, artifacts)
    for line in report(results):
        print(line)
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
