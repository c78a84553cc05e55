"""Pruning: zero the least important weights of the attention and MLP projections, in place.

Importance is |W| (`magnitude`) or |W| x the L2 norm of the weight's input feature over calibration
tokens (`wanda`, Sun et al. 2023: compared within each output row). The zeros are written into the
plain weights, so the saved model has no masks or hooks and loads anywhere. Every layer is handled
on its own, so the working memory is a few copies of the largest layer, not of the model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptctl.errors import BadInput
from gptctl.progress import NULL_PROGRESS, Progress

if TYPE_CHECKING:
    from gptctl.optimize.pipeline import Job

TRAINS = False
ARTIFACT = "hf-model"
_BINS = 1 << 14  # histogram resolution of the global threshold search


def apply(job: Job) -> dict[str, Any]:
    """Prune `job.model` as the options ask; return requested and realised sparsity, per layer and in total."""
    opts = job.options
    norms, calibration_s = None, None
    if opts.method == "wanda":
        t0 = time.perf_counter()
        norms = wanda_norms(
            job.model,
            job.train_data,
            calib_samples=opts.calib_samples,
            batch_size=opts.batch_size,
            pad_id=job.pad_id,
            seed=opts.seed,
            include_lm_head=opts.include_lm_head,
            progress=job.progress,
        )
        calibration_s = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    report = prune_model(
        job.model,
        sparsity=opts.sparsity,
        scope=opts.scope,
        n_m=opts.n_m,
        norms=norms,
        include_lm_head=opts.include_lm_head,
        progress=job.progress,
    )
    report["prune_s"] = round(time.perf_counter() - t0, 3)
    report["calibration_s"] = calibration_s
    return report


def save(job: Job, directory: Path) -> dict[str, Any]:
    """Write the pruned model (save_pretrained, safetensors) in the dtype the input was stored in."""
    from gptctl.optimize.pipeline import stored_dtype

    stored = stored_dtype(job.source)
    if stored is not None and next(job.model.parameters()).dtype != stored:
        job.model.to(stored)  # zeros stay zeros in any float format
    job.model.save_pretrained(directory, safe_serialization=True)
    return {"model": {"path": ".", "kind": ARTIFACT}}


def prune_targets(model, include_lm_head: bool = False) -> list[tuple[str, Any]]:
    """(name, module) of the weights that get pruned: the decoder blocks' Linear/Conv1D (+ the LM head)."""
    from gptctl.optimize.targets import block_linears

    targets = block_linears(model)
    if include_lm_head:
        targets.append(("lm_head", model.get_output_embeddings()))
    return targets


def _rows(module):
    """The weight as (out_features, in_features): a view, so edits land in the module's weight."""
    from transformers.pytorch_utils import Conv1D

    w = module.weight.data
    return w.t() if isinstance(module, Conv1D) else w


def prune_model(
    model,
    *,
    sparsity: float,
    scope: str = "layer",
    n_m: tuple[int, int] | None = None,
    norms: dict[str, Any] | None = None,
    include_lm_head: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, Any]:
    """Zero weights of the attention/MLP projections in place and report what was done.

    Args:
        sparsity: fraction of each layer's (scope=layer) or all targeted (scope=global) weights to zero.
        n_m: (N, M) to keep at most N non-zeros in every M consecutive inputs of each output row.
        norms: per-layer input-feature L2 norms (from `wanda_norms`): score = |W| x norm, per row.
    Returns:
        sparsity_requested, sparsity_realised (over targeted weights), sparsity_model (over all
        parameters), pruned_params, and per_layer {name: {"params", "sparsity"}}.
    """
    import torch

    targets = prune_targets(model, include_lm_head)
    prune_one = _pruner(targets, sparsity=sparsity, scope=scope, n_m=n_m, norms=norms)

    def prune_and_count(item) -> int:
        prune_one(item[0], _rows(item[1]))
        return _zeros(item[1].weight)

    task = progress.task("pruning", total=len(targets))
    counts = []
    with torch.no_grad():
        for zeros in _each_layer(prune_and_count, targets):
            counts.append(zeros)
            task.update(1)
    task.close()
    # A global threshold asks nothing of any single layer; every other mode asks `sparsity` of each.
    asked = None if scope == "global" and n_m is None else sparsity
    per_layer = {
        name: {"params": m.weight.numel(), "requested": asked, "sparsity": round(z / m.weight.numel(), 6)}
        for (name, m), z in zip(targets, counts, strict=False)
    }
    total = sum(m.weight.numel() for _, m in targets)
    pruned = {id(m.weight) for _, m in targets}
    all_params = sum(p.numel() for p in model.parameters())
    all_zeros = sum(counts) + sum(_zeros(p) for p in model.parameters() if id(p) not in pruned)
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    return {
        "sparsity_requested": sparsity,
        "sparsity_realised": round(sum(counts) / total, 6),
        "sparsity_model": round(all_zeros / all_params, 6),
        "pruned_params": total,
        "lm_head_pruned": include_lm_head,
        "lm_head_tied_to_embeddings": tied,
        "per_layer": per_layer,
    }


def _pruner(targets, *, sparsity: float, scope: str, n_m, norms):
    """The function (name, weight as (out, in)) -> None that prunes one layer as asked."""
    if n_m is not None:
        return lambda name, w: _prune_n_m(name, w, n_m, None if norms is None else norms[name])
    if scope == "global":
        threshold = _global_threshold(targets, sparsity)
        return lambda name, w: _prune_global(w, threshold)
    if norms is not None:
        return lambda name, w: _prune_rows(w, norms[name], sparsity)
    return lambda name, w: _prune_smallest(w, round(sparsity * w.numel()))


def _zeros(t) -> int:
    # count_nonzero allocates nothing the size of `t` (a bool .sum() would, as int64).
    import torch

    return t.numel() - int(torch.count_nonzero(t.detach()))


def _each_layer(fn, items):
    """Map `fn` over layers, several at a time on CPU (selection kernels run on one core each).

    Torch's own intra-op threads are set to 1 meanwhile, so the machine's cores are not
    oversubscribed; the memory cost is one layer's temporaries per worker.
    """
    import torch

    on_cpu = all(m.weight.device.type == "cpu" for _, m in items)
    workers = min(torch.get_num_threads(), len(items)) if on_cpu else 1
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            yield from pool.map(fn, items)
    finally:
        torch.set_num_threads(threads)


def _prune_smallest(w, k: int) -> None:
    """Zero exactly the k smallest-|w| entries of `w` (ties at the threshold broken by position)."""
    import torch

    if k <= 0:
        return
    a = w.abs()
    t = torch.kthvalue(a.reshape(-1), k).values
    below = a < t
    w.masked_fill_(below, 0)
    missing = k - int(below.sum())
    if missing > 0:
        ties = (a == t).reshape(-1).nonzero().reshape(-1)[:missing]
        flat = torch.zeros(a.numel(), dtype=torch.bool, device=w.device)
        flat[ties] = True
        w.masked_fill_(flat.view(a.shape), 0)


def _prune_rows(w, norm, sparsity: float) -> None:
    """Wanda: in every output row, zero the `sparsity` share of inputs with the lowest |W| x norm."""
    import torch

    k = round(sparsity * w.shape[1])
    if k <= 0:
        return
    score = w.abs().float() * norm.to(w.device)[None, :]
    idx = torch.topk(score, k, dim=1, largest=False).indices
    mask = torch.zeros_like(score, dtype=torch.bool).scatter_(1, idx, True)
    w.masked_fill_(mask, 0)


def _prune_n_m(name: str, w, n_m: tuple[int, int], norm) -> None:
    import torch

    n, m = n_m
    out_f, in_f = w.shape
    if in_f % m:
        raise BadInput(
            f"{name} has {in_f} inputs, not a multiple of {m}: an {n}:{m} pattern does not fit",
            "use --structure unstructured",
        )
    score = w.abs().float()
    if norm is not None:
        score = score * norm.to(w.device)[None, :]
    groups = score.reshape(out_f, in_f // m, m)
    idx = torch.topk(groups, m - n, dim=-1, largest=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    w.masked_fill_(mask.reshape(out_f, in_f), 0)


def _global_threshold(targets, sparsity: float) -> float:
    """The |w| at or below which `sparsity` of all targeted entries lie, without concatenating them.

    A histogram pass over every layer finds the bin where the count crosses the target; a second
    pass counts exactly what lies below that bin and collects the few entries inside it, among
    which the exact value is picked. Each pass holds one layer's |w| per worker, nothing more.
    """
    import torch

    total = sum(m.weight.numel() for _, m in targets)
    k = round(sparsity * total)
    top = max(float(torch.maximum(_rows(m).max(), -_rows(m).min())) for _, m in targets)
    if k <= 0 or top == 0:
        return 0.0
    hist = sum(_each_layer(lambda item: torch.histc(_rows(item[1]).abs(), bins=_BINS, min=0, max=top).cpu(), targets))
    b = int(torch.searchsorted(hist.double().cumsum(0), torch.tensor(float(k), dtype=torch.float64)).item())
    width = top / _BINS
    lo, hi = b * width, ((b + 1) * width if b < _BINS - 1 else float("inf"))
    below = sum(_each_layer(lambda item: int(torch.count_nonzero(_rows(item[1]).abs() < lo)), targets))

    def inside(item):
        a = _rows(item[1]).abs()
        return a[(a >= lo) & (a < hi)].cpu()

    candidates = torch.cat(list(_each_layer(inside, targets)))
    need = k - below
    if need <= 0 or candidates.numel() == 0:  # float rounding at a bin edge: the edge is the answer
        return lo
    return float(torch.kthvalue(candidates, min(need, candidates.numel())).values)


def _prune_global(w, threshold: float) -> None:
    w.masked_fill_(w.abs().float() <= threshold, 0)


def wanda_norms(
    model,
    data,
    *,
    calib_samples: int,
    batch_size: int,
    pad_id: int,
    seed: int = 0,
    include_lm_head: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, Any]:
    """L2 norm of every input feature of every targeted layer over the calibration tokens.

    One forward pass of the dense model over up to `calib_samples` sequences of `data`, with a
    hook on each targeted layer summing x^2 over the real (non-padding) tokens.
    """
    import random

    import torch

    from gptctl.optimize.data import collate

    if data is None or not data.samples:
        raise BadInput("--method wanda needs calibration data", "pass --data")
    samples = list(data.samples)
    random.Random(seed).shuffle(samples)
    samples = samples[:calib_samples]
    targets = prune_targets(model, include_lm_head)
    sums = {name: None for name, _ in targets}
    current = {"mask": None, "padded": False}

    def hook(name):
        def fn(module, inputs, output):
            x = inputs[0]
            if current["padded"] and x.dim() == 3:
                x = x[current["mask"]]  # real tokens only (a copy; full batches need none)
            dims = tuple(range(x.dim() - 1))
            s = torch.linalg.vector_norm(x, dim=dims, dtype=torch.float32).pow_(2)  # sum of squares, no x^2 copy
            sums[name] = s if sums[name] is None else sums[name] + s

        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in targets]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # Only the LM head's inputs need the head to run; otherwise the body is enough.
    run = model if include_lm_head else model.base_model
    task = progress.task("calibrating (wanda)", total=len(samples))
    try:
        with torch.no_grad():
            for i in range(0, len(samples), batch_size):
                chunk = samples[i : i + batch_size]
                batch = collate(chunk, pad_id)
                current["mask"] = batch["attention_mask"].bool().to(device)
                current["padded"] = not bool(current["mask"].all())
                run(input_ids=batch["input_ids"].to(device), attention_mask=current["mask"].long(), use_cache=False)
                task.update(len(chunk))
    finally:
        for h in handles:
            h.remove()
        task.close()
        model.train(was_training)
        _release_freed_memory()
    return {name: s.sqrt() for name, s in sums.items()}


def _release_freed_memory() -> None:
    """Hand the calibration pass's freed heap back to the OS (glibc keeps it otherwise), so
    pruning does not start from an inflated footprint."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl)
            pass
