"""The fast loss paths compute exactly what the model's own forward computes."""

from __future__ import annotations

import pytest
import torch

from gptctl.optimize.data import IGNORE, Sample, collate
from gptctl.optimize.loss import CausalLMLoss

from tiny_models import ARCHITECTURES

SAMPLES = [
    Sample(list(range(5, 25)), [IGNORE] * 5 + list(range(10, 25))),  # prompt positions carry no loss
    Sample(list(range(30, 36)), list(range(30, 36))),
    Sample(list(range(40, 43)), list(range(40, 43))),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fast_and_padding_free_paths_match_the_model(arch, tiny_model_factory):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_factory(arch)).eval()
    batch = collate(SAMPLES, pad_id=1)
    reference = model(**batch).loss  # HF: mean over labelled next tokens
    per_sample = sum(CausalLMLoss(model)(**collate([s], 1))[0] for s in SAMPLES)

    def run(fast: bool, padding_free: bool):
        fn = CausalLMLoss(model)
        fn.fast, fn._pair_cost = fast, 0.0  # cost 0: always take the padding-free row when allowed
        fn.padding_free = fn.padding_free and padding_free
        model.zero_grad()
        nll, n = fn(**batch)
        nll.backward()
        return nll.detach(), int(n), model.get_input_embeddings().weight.grad.clone()

    slow = run(False, False)
    for fast, flat in [(True, False), (True, True)]:
        nll, n, grad = run(fast, flat)
        assert n == slow[1] == 22
        torch.testing.assert_close(nll, slow[0], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(grad, slow[2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(slow[0] / slow[1], reference.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_sample.detach(), slow[0], atol=1e-4, rtol=1e-5)


def test_padding_free_only_when_cheaper(tiny_model_factory):
    from transformers import AutoModelForCausalLM

    fn = CausalLMLoss(AutoModelForCausalLM.from_pretrained(tiny_model_factory("llama")))
    full = torch.ones(4, 32, dtype=torch.long)
    assert not fn._flat_is_cheaper(full)  # nothing to save
    ragged = full.clone()
    ragged[1:, 8:] = 0
    assert fn._flat_is_cheaper(ragged)
    long = torch.ones(8, 4096, dtype=torch.long)
    long[:, 3000:] = 0
    long[0, 3000:] = 1
    assert not fn._flat_is_cheaper(long)  # one 24k-token row: attention would cost more than the padding
