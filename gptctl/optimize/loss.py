"""The next-token loss, computed only where it counts.

A causal LM's head turns every position into vocabulary logits; with a 49k vocabulary that is a
fifth of a small model's compute, and padding or prompt positions carry no loss. For the
architectures below the decoder body runs once and the head runs only on the positions that have
a label. Anything else goes through the model's own forward. Either way the result is the summed
negative log-likelihood and the number of predicted tokens, so perplexity and mean loss follow
exactly over any number of batches and processes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gptctl.optimize.data import IGNORE

# Model types whose CausalLM forward is exactly `head(body(...).last_hidden_state)` (checked by tests).
_PLAIN_HEAD = {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "opt"}


class CausalLMLoss(nn.Module):
    """Wraps a causal LM (plain, LoRA or prompt-tuning peft model); forward returns (nll_sum, n_tokens).

    Being an `nn.Module` lets DistributedDataParallel wrap it, so gradients are synchronised
    across processes while the fast path is kept.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        hf = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._hf = [hf]  # a list keeps it out of the module tree (it is already inside `model`)
        cfg = getattr(model, "peft_config", {}).get("default") if hasattr(model, "peft_config") else None
        self.prompt_tokens = getattr(cfg, "num_virtual_tokens", 0) if cfg is not None and _is_prompt(cfg) else 0
        self.fast = getattr(hf.config, "model_type", None) in _PLAIN_HEAD

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
        target = labels[:, 1:]
        keep = target != IGNORE
        if self.fast:
            hidden = self._hidden(input_ids, attention_mask)[:, :-1][keep]
            logits = self._hf[0].get_output_embeddings()(hidden)
        else:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            logits = out.logits[:, -input_ids.shape[1]:][:, :-1][keep]  # drop virtual-token positions
        nll = F.cross_entropy(logits.float(), target[keep], reduction="sum")
        return nll, keep.sum()

    def _hidden(self, input_ids, attention_mask):
        hf = self._hf[0]
        body = hf.base_model
        if not self.prompt_tokens:
            return body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        # Prompt tuning: prepend the learned virtual-token embeddings, as peft's own forward does.
        b, n = input_ids.shape[0], self.prompt_tokens
        embeds = hf.get_input_embeddings()(input_ids)
        prompts = self.model.get_prompt(batch_size=b).to(embeds.dtype)
        embeds = torch.cat([prompts, embeds], dim=1)
        mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
        return body(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state[:, n:]


def _is_prompt(cfg) -> bool:
    return str(getattr(cfg, "peft_type", "")).upper().endswith("PROMPT_TUNING")
