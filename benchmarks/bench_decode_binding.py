"""One decode step of `OrtCausalLM` with plain `session.run` vs IO binding, on CPU, measured in alternation.

Three ways to run the same step (batch 1, past length --past): `run` (numpy in, numpy out: ORT copies
each present to a new numpy array), `bound` (one reused binding; presents of step t bound as the pasts
of step t+1 where they lie) and `bound-fresh` (a new binding every call, as before gptctl/runtime took
over). Two random-weight llamas: the 2-layer, 64-dim test model and SmolLM2-135M's shapes (30 layers,
576 hidden, 9/3 heads, 49152 vocabulary: bench_roof's model). Prints the median step of each, per round
interleaved, and the ratios; it decides `OrtCausalLM`'s CPU default (see the comment there).

    python benchmarks/bench_decode_binding.py [--threads 2] [--rounds 7] [--past 64] [--skip-large] [--work DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

SMOLLM2 = dict(
    num_hidden_layers=30,
    hidden_size=576,
    intermediate_size=1536,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


def build(work: Path, name: str, dims: dict | None) -> Path:
    """Export a random llama (the tiny test one, or `dims`) and return its model.onnx (kept from a run before)."""
    from gptctl.export import export_model

    from tiny_models import build_tiny_model, train_tokenizer

    src = work / f"{name}-hf"
    if (work / f"{name}-onnx" / "model.onnx").is_file():
        return work / f"{name}-onnx" / "model.onnx"
    if dims is None:
        build_tiny_model("llama", src)
    else:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = train_tokenizer(src)
        torch.manual_seed(0)
        LlamaForCausalLM(
            LlamaConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **dims)
        ).save_pretrained(src, safe_serialization=True)
    out = work / f"{name}-onnx"
    export_model({"model": str(src), "output": str(out), "greedy_tokens": 2})
    return out / "model.onnx"


def step_timer(lm, past_len: int, mode: str):
    """A function timing one decode step (seconds) of `lm` at `past_len` in `mode`."""
    import numpy as np

    _, past = lm.forward(np.arange(1, past_len + 1)[None] % 300)
    token = np.array([[7]])

    def once() -> float:
        lm.io_binding = mode != "run"
        if mode == "bound-fresh":
            lm._binding = None
        t0 = time.perf_counter()
        lm.forward(token, past, past_len=past_len)
        return time.perf_counter() - t0

    return once


def measure(model: Path, threads: int, rounds: int, past_len: int, steps: int) -> dict[str, float]:
    from gptctl.runtime.session import OrtCausalLM

    modes = ("run", "bound", "bound-fresh")
    timers = {}
    for mode in modes:
        lm, _ = OrtCausalLM.from_path(model, "cpu", threads=threads, io_binding=mode != "run")
        timers[mode] = step_timer(lm, past_len, mode)
        for _ in range(3):
            timers[mode]()  # warm-up
    best: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(rounds):  # alternate, so that drift of the shared machine hits every mode alike
        for mode in modes:
            best[mode].append(statistics.median(timers[mode]() for _ in range(steps)))
    return {m: statistics.median(v) * 1e3 for m, v in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--past", type=int, default=64)
    ap.add_argument("--skip-large", action="store_true", help="only the tiny llama")
    ap.add_argument("--work", help="keep the exported models here and reuse them on the next run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.work or scratch
        cases = [("tiny-llama", None, 50)] + ([] if args.skip_large else [("smollm2-135m-shapes", SMOLLM2, 5)])
        for name, dims, steps in cases:
            model = build(Path(tmp), name, dims)
            ms = measure(model, args.threads, args.rounds, args.past, steps)
            print(
                f"{name}: decode step at past {args.past}, {args.threads} threads (median of {args.rounds} rounds): "
                + ", ".join(f"{m} {v:.3f} ms" for m, v in ms.items())
                + f"; bound/run {ms['bound'] / ms['run']:.3f}"
                + f", bound-fresh/bound {ms['bound-fresh'] / ms['bound']:.3f}"
            )


if __name__ == "__main__":
    main()
