"""Perplexity on held-out data, the number every method reports before and after."""

from __future__ import annotations

from typing import Any

from gptctl.evaluation.perplexity import perplexity_from_nll
from gptctl.optimize.data import Dataset, collate
from gptctl.progress import NULL_PROGRESS, Progress


def perplexity(
    model,
    data: Dataset,
    *,
    batch_size: int,
    pad_id: int,
    autocast=None,
    dist=None,
    progress: Progress = NULL_PROGRESS,
    label: str = "evaluating",
) -> dict[str, Any]:
    """Token-weighted perplexity of `model` on `data` (the labelled tokens of every sequence), the
    definition `gptctl.evaluation` shares with export.

    Args:
        model: a causal LM, or a `CausalLMLoss` wrapping one.
        dist: an `accelerate.Accelerator` when several processes share the work (each takes
            every world-th batch; sums are reduced), else None.
    Returns:
        {"ppl", "nll", "tokens"}.
    """
    import contextlib

    import torch

    from gptctl.optimize.loss import CausalLMLoss

    loss_fn = model if isinstance(model, CausalLMLoss) else CausalLMLoss(model)
    inner = loss_fn.model
    was_training = inner.training
    inner.eval()
    rank, world = (dist.process_index, dist.num_processes) if dist is not None else (0, 1)
    # Longest first: padding stays small and a memory problem shows up on the first batch.
    order = sorted(range(len(data.samples)), key=lambda i: -len(data.samples[i].input_ids))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    device = next(inner.parameters()).device
    nll = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.long, device=device)
    task = progress.task(label, total=len(batches))
    try:
        with torch.no_grad():
            for i, idx in enumerate(batches):
                if i % world == rank:
                    batch = {k: v.to(device) for k, v in collate([data.samples[j] for j in idx], pad_id).items()}
                    with autocast() if autocast else contextlib.nullcontext():
                        s, n = loss_fn(**batch)
                    nll += s.double()
                    count += n
                task.update(1)
    finally:
        task.close()
        inner.train(was_training)
    if dist is not None and world > 1:
        nll, count = dist.reduce(nll, "sum"), dist.reduce(count, "sum")
    tokens = int(count.item())
    mean = nll.item() / max(tokens, 1)
    return {"ppl": perplexity_from_nll(mean), "nll": mean, "tokens": tokens}
