"""The training loop shared by every method that trains (LoRA, prompt tuning).

A plain PyTorch loop under `accelerate.Accelerator`, so one command runs on one CPU, one GPU, or
data-parallel under `accelerate launch --num_processes N`. Data order is a pure function of the
seed and the step, which is what makes `--resume` exact: a checkpoint holds the trainable weights,
the optimizer and scheduler state and the loss history, nothing else.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput
from gptctl.optimize.data import Dataset, collate
from gptctl.progress import Progress

CHECKPOINT = "checkpoints/last.pt"


def train(model, data: Dataset, opts, *, accelerator, work_dir: Path, progress: Progress, pad_id: int,
          fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Train the parameters of `model` that require grad on `data`; return the training metrics.

    Args:
        model: the (peft) model; its trainable parameters are the ones updated.
        opts: a `TrainingOptions` (lr, epochs/max_steps, batch_size, grad_accum, warmup, ...).
        work_dir: the stable working directory; checkpoints go to `work_dir/checkpoints/`.
        fingerprint: what must match for `--resume` to continue a checkpoint (options, input hashes).
    Raises:
        BadInput: `--resume` with a checkpoint made by different options.
    """
    import torch

    from gptctl.optimize.loss import CausalLMLoss

    world, rank = accelerator.num_processes, accelerator.process_index
    if opts.gradient_checkpointing:
        hf = model.get_base_model() if hasattr(model, "get_base_model") else model
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    params = list(named.values())
    micro_per_epoch, steps_for_epochs = _schedule(len(data.samples), opts.batch_size, world, opts.grad_accum, opts.epochs)
    total = opts.max_steps or steps_for_epochs
    warmup = int(opts.warmup) if opts.warmup >= 1 else round(opts.warmup * total)

    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup, total))
    loss_fn, optimizer = accelerator.prepare(CausalLMLoss(model), optimizer)

    ckpt_path = Path(work_dir) / CHECKPOINT
    start, history = 0, []
    if opts.resume and ckpt_path.is_file():
        start, history = _load_checkpoint(ckpt_path, named, optimizer, scheduler, fingerprint)
        progress.info(f"resuming from step {start} of {total} ({ckpt_path})")
    elif opts.resume:
        progress.info(f"no checkpoint in {ckpt_path.parent}; starting from step 0")
    torch.manual_seed(opts.seed + start)  # dropout; data order does not depend on it

    device = accelerator.device
    loss_fn.train()
    tokens = torch.zeros((), dtype=torch.long)
    in_step = False
    task = progress.task("training", total=total)
    if start:
        task.update(start)
    t0 = time.perf_counter()
    try:
        for step in range(start, total):
            step_sum = torch.zeros(2, dtype=torch.float64, device=device)  # [nll, tokens] on this process
            for k in range(opts.grad_accum):
                micro = step * opts.grad_accum + k
                batch = collate(_micro_batch(data, micro, micro_per_epoch, opts.batch_size, world, rank, opts.seed), pad_id)
                tokens += batch["attention_mask"].sum()
                batch = {key: v.to(device) for key, v in batch.items()}
                sync = k == opts.grad_accum - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(loss_fn):
                    nll, n = loss_fn(**batch)
                    accelerator.backward(nll / n.clamp(min=1) / opts.grad_accum)
                step_sum += torch.stack([nll.detach().double(), n.double()])
            in_step = True
            if opts.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, opts.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            in_step = False
            if world > 1:
                step_sum = accelerator.reduce(step_sum, "sum")
            nll_sum, n_sum = step_sum.tolist()
            history.append(nll_sum / max(n_sum, 1))
            task.update(1, loss=history[-1], lr=scheduler.get_last_lr()[0])
            if (step + 1) % opts.checkpoint_every == 0 and step + 1 < total and accelerator.is_main_process:
                _save_checkpoint(ckpt_path, step + 1, named, optimizer, scheduler, history, fingerprint)
    except BaseException:
        # Ctrl-C or an error: keep the steps completed so far (the weights, optimizer and scheduler
        # change together only inside a step), so `--resume` loses nothing.
        done = len(history)
        if not in_step and done > start and accelerator.is_main_process:
            _save_checkpoint(ckpt_path, done, named, optimizer, scheduler, history, fingerprint)
            progress.info(f"stopped after step {done} of {total}; checkpoint saved: pass --resume to continue")
        raise
    finally:
        task.close()
    train_s = time.perf_counter() - t0

    per_rank = accelerator.gather(tokens.to(device).reshape(1)).tolist() if world > 1 else [int(tokens)]
    new_tokens = sum(per_rank)  # this run's: a resumed run measures its own part
    in_sync = None
    if world > 1:  # data parallel must end with the same weights everywhere
        checksum = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1).to(device)
        sums = accelerator.gather(checksum).tolist()
        in_sync = max(sums) - min(sums) <= 1e-6 * max(1.0, abs(sums[0]))
    return {
        "steps": total,
        "resumed_from_step": start or None,
        "epochs_run": round(total * opts.grad_accum / max(micro_per_epoch, 1), 3),
        "warmup_steps": warmup,
        "loss_first": history[0] if history else None,
        "loss_last": history[-1] if history else None,
        "loss_curve": _summarise(history),
        "train_tokens": new_tokens,
        "train_tokens_per_rank": per_rank,
        "train_s": round(train_s, 3),
        "train_tokens_per_s": round(new_tokens / train_s, 2) if train_s > 0 else None,
        "world_size": world,
        "ranks_in_sync": in_sync,
        "global_batch_size": opts.batch_size * opts.grad_accum * world,
    }


def _schedule(n: int, batch: int, world: int, accum: int, epochs: float) -> tuple[int, int]:
    micro = math.ceil(n / (batch * world))
    return micro, max(1, math.ceil(epochs * micro / accum))


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def _micro_batch(data: Dataset, micro: int, per_epoch: int, batch: int, world: int, rank: int, seed: int):
    """The samples of micro-batch `micro` for process `rank`: a seeded shuffle per epoch, padded by wrapping."""
    import torch

    epoch, j = divmod(micro, per_epoch)
    n = len(data.samples)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    span = batch * world
    idx = [order[(j * span + rank * batch + i) % n] for i in range(batch)]
    return [data.samples[i] for i in idx]


def _summarise(history: list[float], points: int = 20) -> list[list[float]]:
    """[step, loss] pairs, at most `points` of them, each the mean of its stretch of steps."""
    if not history:
        return []
    size = max(1, math.ceil(len(history) / points))
    return [[min(i + size, len(history)), round(sum(history[i: i + size]) / len(history[i: i + size]), 5)]
            for i in range(0, len(history), size)]


def _save_checkpoint(path: Path, step: int, named, optimizer, scheduler, history, fingerprint) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "trainable": {n: p.detach().cpu() for n, p in named.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": list(history[:step]),
        "fingerprint": fingerprint,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, named, optimizer, scheduler, fingerprint) -> tuple[int, list[float]]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    old = state.get("fingerprint", {})
    changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    if changed:
        what = ", ".join(f"{k}: {old.get(k)!r} then, {fingerprint.get(k)!r} now" for k in changed[:4])
        raise BadInput(f"--resume: the checkpoint in {path.parent} was made with different inputs or options ({what})",
                       "run again with the same options, or drop --resume to start over")
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(state["trainable"][n].to(p.device, p.dtype))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"]), list(state["history"])
