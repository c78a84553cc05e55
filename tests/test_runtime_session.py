"""OrtCausalLM: padded batches equal batch-1 runs on every tiny architecture, prefill, stop/suppress ids,
IO binding, and from_path's errors."""

import numpy as np
import pytest

from gptctl.errors import BadInput, CheckFailed, GptctlError
from gptctl.runtime.session import OrtCausalLM, left_pad, positions_from_mask

from tiny_models import ARCHITECTURES

# Different lengths, so every batch below is padded; the one-token prompt is padded most.
PROMPTS = [[5, 17, 33, 80, 99, 120, 7, 8], [3, 9, 27], [44, 12, 90, 91, 200], [61]]
ATOL = 1e-4


def open_lm(path, **kwargs) -> OrtCausalLM:
    lm, _ = OrtCausalLM.from_path(path, "cpu", threads=1, **kwargs)
    return lm


@pytest.fixture(params=ARCHITECTURES)
def arch_lm(request, tiny_export_factory):
    return request.param, open_lm(tiny_export_factory(request.param))


def test_padded_generate_rows_equal_each_prompt_alone(arch_lm):
    arch, lm = arch_lm
    batched = lm.generate(PROMPTS, 10)
    alone = [lm.generate([p], 10)[0] for p in PROMPTS]
    assert batched == alone
    # ... and both equal the unpadded greedy loop that validation and bench use.
    assert alone == [lm.greedy(np.array([p]), 10)[0].tolist() for p in PROMPTS]


def test_padded_logits_match_each_row_alone_in_prefill_and_decode(arch_lm):
    arch, lm = arch_lm
    ids, mask = left_pad(PROMPTS)
    out, past = lm.forward(ids, attention_mask=mask)
    nxt = out["logits"][:, -1].argmax(-1)[:, None]
    mask2 = np.concatenate([mask, np.ones((len(PROMPTS), 1), dtype=np.int64)], axis=1)
    out2, _ = lm.forward(nxt, past, past_len=ids.shape[1], attention_mask=mask2)
    for i, prompt in enumerate(PROMPTS):
        logits, presents = lm.prefill(prompt)
        np.testing.assert_allclose(out["logits"][i, -1], logits, atol=ATOL, rtol=0)
        step, _ = lm.forward(nxt[i : i + 1], presents, past_len=len(prompt))
        np.testing.assert_allclose(out2["logits"][i, -1], step["logits"][0, -1], atol=ATOL, rtol=0)


def test_masked_padding_and_per_row_positions_both_matter(tiny_export_factory):
    # The two ways a padded batch goes wrong, each shown to change a row's logits: what the tests above guard.
    lm = open_lm(tiny_export_factory("gpt2"))  # absolute positions: a shift changes the logits
    ids, mask = left_pad(PROMPTS[:2])
    alone, _ = lm.prefill(PROMPTS[1])
    right, _ = lm.forward(ids, attention_mask=mask)
    unmasked, _ = lm.forward(ids)
    shared, _ = lm.forward(ids, attention_mask=mask, position_ids=np.arange(ids.shape[1])[None].repeat(2, 0))
    assert np.abs(right["logits"][1, -1] - alone).max() <= ATOL
    assert np.abs(unmasked["logits"][1, -1] - alone).max() > 1e-2
    assert np.abs(shared["logits"][1, -1] - alone).max() > 1e-2


def test_default_positions_count_each_rows_tokens_from_zero(tiny_export_factory):
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert positions_from_mask(mask, 5).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert positions_from_mask(mask, 2).tolist() == [[1, 2], [3, 4]]
    lm = open_lm(tiny_export_factory("opt"))
    ids, mask = left_pad(PROMPTS[:2])
    derived, _ = lm.forward(ids, attention_mask=mask)
    explicit, _ = lm.forward(ids, attention_mask=mask, position_ids=positions_from_mask(mask, ids.shape[1]))
    np.testing.assert_array_equal(derived["logits"], explicit["logits"])
    with pytest.raises(ValueError, match="attention_mask is"):
        lm.forward(ids, attention_mask=mask[:, 1:])


def test_prefill_returns_last_logits_and_presents_in_past_order(tiny_export_factory):
    lm = open_lm(tiny_export_factory("llama"))
    logits, presents = lm.prefill(PROMPTS[0])
    out, past = lm.forward(np.array([PROMPTS[0]]))
    assert logits.dtype == np.float32 and logits.shape == (out["logits"].shape[-1],)
    np.testing.assert_array_equal(logits, out["logits"][0, -1])
    assert len(presents) == len(lm.past_names)
    for p, name in zip(presents, lm.present_names, strict=True):
        assert isinstance(p, np.ndarray) and p.shape == (1, lm.kv_heads, len(PROMPTS[0]), lm.head_dim)
        np.testing.assert_array_equal(p, out[name])


def test_stop_ids_end_a_row_after_the_stop_token(tiny_export_factory):
    lm = open_lm(tiny_export_factory("llama"))
    free = lm.generate(PROMPTS[:2], 10)
    stop = free[0][3]
    got = lm.generate(PROMPTS[:2], 10, stop_ids=[stop])
    for row, want in zip(got, free, strict=True):
        end = want.index(stop) + 1 if stop in want else len(want)
        assert row == want[:end]
    assert got[0][-1] == stop and len(got[0]) <= 4


def test_suppressed_ids_are_never_chosen(tiny_export_factory):
    lm = open_lm(tiny_export_factory("qwen2"))
    free = lm.generate(PROMPTS, 6)
    banned = sorted({t for row in free for t in row})
    got = lm.generate(PROMPTS, 6, suppress_ids=banned)
    assert all(len(row) == 6 and not set(row) & set(banned) for row in got)


def test_io_binding_equals_plain_run_and_keeps_one_binding(tiny_export_factory):
    path = tiny_export_factory("gpt_neox")
    plain, bound = open_lm(path), open_lm(path, io_binding=True)
    assert not plain.io_binding and bound.io_binding
    assert bound.generate(PROMPTS, 8) == plain.generate(PROMPTS, 8)
    ids = np.array([PROMPTS[0]])
    assert bound.greedy(ids, 8).tolist() == plain.greedy(ids, 8).tolist()
    binding = bound._binding
    # The presents of an earlier run stay valid (and on their device) while the binding is reused.
    _, kept = bound.forward(ids)
    before = [p.numpy().copy() for p in kept]
    assert all(not isinstance(p, np.ndarray) for p in kept)
    bound.forward(np.array([PROMPTS[1]]))
    bound.forward(np.array([[1]]), kept, past_len=ids.shape[1])
    assert bound._binding is binding
    for p, b in zip(kept, before, strict=True):
        np.testing.assert_array_equal(p.numpy(), b)
    logits, presents = bound.prefill(PROMPTS[2])
    want_logits, want_presents = plain.prefill(PROMPTS[2])
    np.testing.assert_array_equal(logits, want_logits)
    assert all(isinstance(p, np.ndarray) and np.array_equal(p, w) for p, w in zip(presents, want_presents, strict=True))


def test_padded_generate_without_kv_cache(tiny_export_factory):
    lm = open_lm(tiny_export_factory("gpt2", "text-generation"))
    assert not lm.has_cache and lm.supports_padding
    assert lm.generate(PROMPTS, 5) == [lm.generate([p], 5)[0] for p in PROMPTS]


class _FakeSession:
    def __init__(self, inputs):
        self._inputs = [type("Arg", (), {"name": n, "shape": [1, 2, 0, 4], "type": "tensor(float)"})() for n in inputs]

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return [type("Arg", (), {"name": n})() for n in ("logits", "present.0.key")]


def test_supports_padding_needs_an_attention_mask_input():
    assert OrtCausalLM(_FakeSession(["input_ids", "attention_mask", "past_key_values.0.key"])).supports_padding
    lm = OrtCausalLM(_FakeSession(["input_ids", "past_key_values.0.key"]))
    assert not lm.supports_padding
    with pytest.raises(ValueError, match="no attention_mask input"):
        lm.forward(np.array([[1, 2]]), attention_mask=np.array([[0, 1]]))


def test_from_path_names_a_missing_or_truncated_file(tmp_path, tiny_export_factory):
    for path in (tmp_path / "absent.onnx", tmp_path):
        with pytest.raises(BadInput, match=str(path)):
            OrtCausalLM.from_path(path)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(tiny_export_factory("gpt2").read_bytes()[:5000])
    with pytest.raises(BadInput, match="cut.onnx is not a readable ONNX model") as err:
        OrtCausalLM.from_path(cut)
    assert err.value.hint


def test_from_path_raises_check_failed_for_a_provider_that_is_not_active(monkeypatch, tiny_export_factory):
    import gptctl.runtime.providers as providers

    reason = "CUDAExecutionProvider was requested but the session runs on ['CPUExecutionProvider']"
    monkeypatch.setattr(providers, "create_session", lambda *a, **k: (None, {"reason": reason}))
    with pytest.raises(CheckFailed) as err:
        OrtCausalLM.from_path(tiny_export_factory("gpt2"), "cuda")
    assert str(err.value) == reason and not isinstance(err.value, RuntimeError)
    assert isinstance(err.value, GptctlError)
