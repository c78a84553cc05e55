"""The training loop shared by every method that trains (LoRA, prompt tuning).

A plain PyTorch loop under `accelerate.Accelerator`, so one command runs on one CPU, one GPU, or
data-parallel under `accelerate launch --num_processes N`. Data order is a pure function of the
seed and the step, which is what makes `--resume` exact: a checkpoint holds the trainable weights,
the optimizer and scheduler state and the loss history, nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput
from gptctl.optimize.data import Dataset, collate
from gptctl.progress import Progress

CHECKPOINT = "checkpoints/last.pt"


def train(
    model,
    data: Dataset,
    opts,
    *,
    accelerator,
    work_dir: Path,
    progress: Progress,
    pad_id: int,
    fingerprint: dict[str, Any],
) -> dict[str, Any]:
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

    if opts.gradient_checkpointing:
        hf = model.get_base_model() if hasattr(model, "get_base_model") else model
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    loop = _Loop(model, data, opts, accelerator, pad_id)
    ckpt = Path(work_dir) / CHECKPOINT
    start = 0
    if opts.resume and ckpt.is_file():
        start = loop.load(ckpt, fingerprint)
        progress.info(f"resuming from step {start} of {loop.total} ({ckpt})")
    elif opts.resume:
        progress.info(f"no checkpoint in {ckpt.parent}; starting from step 0")
    torch.manual_seed(opts.seed + start)  # dropout; the data order does not depend on it

    task = progress.task("training", total=loop.total)
    task.update(start)
    t0 = time.perf_counter()
    try:
        for step in range(start, loop.total):
            loss = loop.step(step)
            task.update(1, loss=loss, lr=loop.scheduler.get_last_lr()[0])
            if (step + 1) % opts.checkpoint_every == 0 and step + 1 < loop.total and accelerator.is_main_process:
                loop.save(ckpt, fingerprint)
    except BaseException:
        # Ctrl-C or an error: keep the steps completed so far (weights, optimizer and scheduler
        # change together only inside a step), so `--resume` loses nothing.
        if not loop.in_step and len(loop.history) > start and accelerator.is_main_process:
            loop.save(ckpt, fingerprint)
            progress.info(
                f"stopped after step {len(loop.history)} of {loop.total}; checkpoint saved: "
                "run again with --resume to continue"
            )
        elif loop.in_step and ckpt.is_file() and accelerator.is_main_process:
            # Inside an optimizer step the weights may be half-updated: keep the last whole checkpoint.
            progress.info(
                f"stopped inside step {len(loop.history) + 1} of {loop.total}; the last checkpoint is kept: "
                "run again with --resume to continue"
            )
        raise
    finally:
        task.close()
    return loop.metrics(time.perf_counter() - t0, start)


class _Loop:
    """Optimizer, schedule and the state a checkpoint carries; `step(i)` runs optimizer step i."""

    def __init__(self, model, data: Dataset, opts, accelerator, pad_id: int):
        import torch

        from gptctl.optimize.loss import CausalLMLoss

        self.data, self.opts, self.acc, self.pad_id = data, opts, accelerator, pad_id
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.micro_per_epoch, steps = _schedule(
            len(data.samples), opts.batch_size, self.world, opts.grad_accum, opts.epochs
        )
        self.total = opts.max_steps or steps
        self.warmup = int(opts.warmup) if opts.warmup >= 1 else round(opts.warmup * self.total)
        optimizer = torch.optim.AdamW(list(self.named.values()), lr=opts.lr, weight_decay=opts.weight_decay)
        self.schedule = getattr(opts, "schedule", "constant")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, self.warmup, self.total, self.schedule)
        )
        self.loss_fn, self.optimizer = accelerator.prepare(CausalLMLoss(model), optimizer)
        self.loss_fn.train()
        self.history: list[float] = []  # mean loss of every optimizer step so far (all processes)
        self.tokens = 0  # real (non-padding) tokens this process trained on in this run
        self.in_step = False

    def step(self, step: int) -> float:
        import torch

        opts, acc = self.opts, self.acc
        sums = torch.zeros(2, dtype=torch.float64, device=acc.device)  # [nll, predicted tokens]
        for k in range(opts.grad_accum):
            samples = _micro_batch(
                self.data,
                step * opts.grad_accum + k,
                self.micro_per_epoch,
                opts.batch_size,
                self.world,
                self.rank,
                opts.seed,
            )
            batch = collate(samples, self.pad_id)
            self.tokens += int(batch["attention_mask"].sum())
            batch = {key: v.to(acc.device) for key, v in batch.items()}
            last = k == opts.grad_accum - 1  # gradients are synchronised once, on the last micro-batch
            with contextlib.nullcontext() if last else acc.no_sync(self.loss_fn):
                nll, n = self.loss_fn(**batch)
                acc.backward(nll / n.clamp(min=1) / opts.grad_accum)
            sums += torch.stack([nll.detach().double(), n.double()])
        self.in_step = True
        if opts.max_grad_norm > 0:
            acc.clip_grad_norm_(list(self.named.values()), opts.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.world > 1:
            sums = acc.reduce(sums, "sum")
        nll_sum, n_sum = sums.tolist()
        self.history.append(nll_sum / max(n_sum, 1))
        # Only now do the weights and the step count agree: a Ctrl-C before this line saves nothing.
        self.in_step = False
        return self.history[-1]

    def save(self, path: Path, fingerprint: dict[str, Any]) -> None:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "step": len(self.history),
            "trainable": {n: p.detach().cpu() for n, p in self.named.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": list(self.history),
            "fingerprint": fingerprint,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def load(self, path: Path, fingerprint: dict[str, Any]) -> int:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        old = state.get("fingerprint", {})
        changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if changed:
            what = ", ".join(f"{k}: {old.get(k)!r} then, {fingerprint.get(k)!r} now" for k in changed[:4])
            raise BadInput(
                f"--resume: the checkpoint in {path.parent} was made with different inputs or options ({what})",
                "run again with the same options, or drop --resume to start over",
            )
        with torch.no_grad():
            for n, p in self.named.items():
                p.copy_(state["trainable"][n].to(p.device, p.dtype))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = list(state["history"])
        return int(state["step"])

    def metrics(self, seconds: float, start: int) -> dict[str, Any]:
        import torch

        acc, world = self.acc, self.world
        per_rank = [self.tokens]
        in_sync = None
        if world > 1:
            per_rank = acc.gather(torch.tensor([self.tokens], device=acc.device)).tolist()
            # Data parallel must end with the same weights in every process.
            checksum = torch.stack([p.detach().double().sum() for p in self.named.values()]).sum().reshape(1)
            sums = acc.gather(checksum.to(acc.device)).tolist()
            in_sync = max(sums) - min(sums) <= 1e-6 * max(1.0, abs(sums[0]))
        tokens = sum(per_rank)  # this run's: a resumed run measures its own part
        h = self.history
        return {
            "steps": self.total,
            "resumed_from_step": start or None,
            "epochs_run": round(self.total * self.opts.grad_accum / max(self.micro_per_epoch, 1), 3),
            "warmup_steps": self.warmup,
            "lr_schedule": self.schedule,
            "loss_first": h[0] if h else None,
            "loss_last": h[-1] if h else None,
            "loss_curve": _summarise(h),
            "train_tokens": tokens,
            "train_tokens_per_rank": per_rank,
            "train_s": round(seconds, 3),
            "train_tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else None,
            "world_size": world,
            "ranks_in_sync": in_sync,
            "global_batch_size": self.opts.batch_size * self.opts.grad_accum * world,
        }


def _schedule(n: int, batch: int, world: int, accum: int, epochs: float) -> tuple[int, int]:
    micro = math.ceil(n / (batch * world))
    return micro, max(1, math.ceil(epochs * micro / accum))


COSINE_FLOOR = 0.1  # cosine ends at 10% of the peak rate, not 0: the last steps still learn


def lr_factor(step: int, warmup: int, total: int, schedule: str = "constant") -> float:
    """The multiplier of the peak rate at optimizer step `step`: linear warmup, then `schedule`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    done = (step - warmup) / max(1, total - warmup)  # 0 at the first step after warmup
    if schedule == "linear":
        return max(0.0, 1.0 - done)
    if schedule == "cosine":
        return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
    return 1.0


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def _micro_batch(data: Dataset, micro: int, per_epoch: int, batch: int, world: int, rank: int, seed: int):
    """The samples of micro-batch `micro` for process `rank`: a seeded shuffle per epoch, padded by wrapping."""
    epoch, j = divmod(micro, per_epoch)
    n = len(data.samples)
    order = _epoch_order(n, seed, epoch)
    span = batch * world
    idx = [order[(j * span + rank * batch + i) % n] for i in range(batch)]
    return [data.samples[i] for i in idx]


def _summarise(history: list[float], points: int = 20) -> list[list[float]]:
    """[step, loss] pairs, at most `points` of them, each the mean of its stretch of steps."""
    if not history:
        return []
    size = max(1, math.ceil(len(history) / points))
    return [
        [min(i + size, len(history)), round(sum(history[i : i + size]) / len(history[i : i + size]), 5)]
        for i in range(0, len(history), size)
    ]
