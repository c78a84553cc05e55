"""Training and evaluation data of `gptctl optimize`: reading and tokenising live in
`gptctl.evaluation.records` (shared with export and the recipes); the held-out split and batching here."""

from __future__ import annotations

import random

from gptctl.errors import BadInput
from gptctl.evaluation.records import IGNORE, Dataset, Record, Sample, read_records, tokenize

__all__ = ["IGNORE", "Dataset", "Record", "Sample", "collate", "read_records", "split_records", "tokenize"]


def split_records(records: list[Record], fraction: float, seed: int, path: str) -> tuple[list[Record], list[Record]]:
    """Hold out `fraction` of the records (at least one) for evaluation, chosen with `seed`."""
    if len(records) < 2:
        raise BadInput(f"{path} has {len(records)} sample; --eval-split needs at least 2", "pass --eval-data instead")
    n_eval = min(len(records) - 1, max(1, round(len(records) * fraction)))
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def collate(samples: list[Sample], pad_id: int):
    """Right-pad a list of samples into tensors: input_ids, attention_mask, labels."""
    import torch

    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        ids[i, :n] = torch.tensor(s.input_ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(s.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
