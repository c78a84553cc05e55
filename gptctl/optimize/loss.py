"""The next-token loss, computed only where it counts.

Two savings over `model(**batch, labels=...)`, both exact (same loss, same gradients):

* The LM head runs only on positions that have a label. With a 49k vocabulary the head is a fifth
  of a small model's compute, and padding or prompt positions carry no loss.
* A padded batch can run padding-free: its samples are laid end to end in one row, positions
  restart at each sample, and the model's mask keeps every sample attending only to itself (the
  packed-sequence masks transformers builds from position ids). Padding then costs nothing. This
  is chosen per batch when it is cheaper (attention over the long row grows quadratically).

Both apply to architectures whose forward is plainly `head(body(...))` (listed below, checked by
tests); anything else goes through the model's own forward. The result is always the summed
negative log-likelihood and the number of predicted tokens, so perplexity and mean loss combine
exactly over batches and processes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gptctl.optimize.data import IGNORE

# Model types whose CausalLM forward is exactly `head(body(...).last_hidden_state)`.
_PLAIN_HEAD = {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "opt"}
# ... and whose attention masks honour position-id resets (transformers' create_causal_mask).
_PACKED_MASKS = {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox"}


class CausalLMLoss(nn.Module):
    """Wraps a causal LM (plain, LoRA or prompt-tuning peft model); forward returns (nll_sum, n_tokens).

    Being an `nn.Module` lets DistributedDataParallel wrap it, so gradients are synchronised
    across processes while the fast paths are kept.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        hf = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._hf = [hf]  # a list keeps it out of the module tree (it is already inside `model`)
        cfg = model.peft_config.get("default") if hasattr(model, "peft_config") else None
        self.prompt_tokens = getattr(cfg, "num_virtual_tokens", 0) if cfg is not None and _is_prompt(cfg) else 0
        model_type = getattr(hf.config, "model_type", None)
        self.fast = model_type in _PLAIN_HEAD
        self.padding_free = model_type in _PACKED_MASKS and not self.prompt_tokens and _packed_masks_supported()
        # Attention cost of one (query, key) pair relative to the dense cost of one token, per layer:
        # ~4*d FLOPs against ~2 * (non-embedding parameters per layer).
        dense = sum(
            p.numel()
            for n, p in hf.named_parameters()
            if p.dim() == 2
            and "embed" not in n
            and "wte" not in n
            and "wpe" not in n
            and p is not getattr(hf.get_output_embeddings(), "weight", None)
        )
        layers = getattr(hf.config, "num_hidden_layers", 1) or 1
        self._pair_cost = 2 * getattr(hf.config, "hidden_size", 0) * layers / max(dense, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
        position_ids = None
        if self.fast and self.padding_free and self._flat_is_cheaper(attention_mask):
            input_ids, labels, position_ids = _flatten(input_ids, attention_mask, labels)
            attention_mask = None
        target = labels[:, 1:]
        keep = target != IGNORE
        if self.fast:
            hidden = self._hidden(input_ids, attention_mask, position_ids)[:, :-1][keep]
            logits = self._hf[0].get_output_embeddings()(hidden)
        else:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            logits = out.logits[:, -input_ids.shape[1] :][:, :-1][keep]  # drop virtual-token positions
        nll = F.cross_entropy(logits.float(), target[keep], reduction="sum")
        return nll, keep.sum()

    def _flat_is_cheaper(self, attention_mask: torch.Tensor) -> bool:
        b, width = attention_mask.shape
        real = int(attention_mask.sum())
        if b == 1 or real == b * width:
            return False
        padded = b * width * (1 + self._pair_cost * width)
        flat = real * (1 + self._pair_cost * real)
        return flat < 0.95 * padded

    def _hidden(self, input_ids, attention_mask, position_ids=None):
        hf = self._hf[0]
        body = hf.base_model
        if not self.prompt_tokens:
            return body(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
        # Prompt tuning: prepend the learned virtual-token embeddings, as peft's own forward does.
        b, n = input_ids.shape[0], self.prompt_tokens
        embeds = hf.get_input_embeddings()(input_ids)
        prompts = self.model.get_prompt(batch_size=b).to(embeds.dtype)
        embeds = torch.cat([prompts, embeds], dim=1)
        mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
        return body(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state[:, n:]


def _flatten(input_ids, attention_mask, labels):
    """A right-padded batch as one row: samples end to end, positions restarting at each sample.

    A sample's first token is never a target, so its label is dropped: the shift across the row
    then pairs every prediction with the next token of the same sample, exactly as padded.
    """
    real = attention_mask.bool()
    labels = labels.clone()
    labels[:, 0] = IGNORE
    positions = torch.arange(attention_mask.shape[1], device=input_ids.device).expand_as(input_ids)
    return input_ids[real][None], labels[real][None], positions[real][None]


def _packed_masks_supported() -> bool:
    # transformers builds per-sample masks from position ids only with torch >= 2.6; older
    # versions would let samples attend to each other, so padding-free stays off there.
    try:
        from transformers import masking_utils
    except ImportError:
        return False
    return bool(getattr(masking_utils, "_is_torch_greater_or_equal_than_2_6", False)) and hasattr(
        masking_utils, "find_packed_sequence_indices"
    )


def _is_prompt(cfg) -> bool:
    return str(getattr(cfg, "peft_type", "")).upper().endswith("PROMPT_TUNING")
