"""The fast Llama graph (pass `fast_graph`, gptctl/export/llama_graph.py): GroupQueryAttention, fused q|k|v and
gate|up MatMuls and fused RMSNorm, with optimum's inputs and outputs; validated against PyTorch, padded
batches included; skipped with a reason where it does not apply."""

import numpy as np
import onnx
import pytest

from gptctl.export import export_model


@pytest.fixture(scope="module")
def fast_llama(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("fast") / "onnx"
    return out, export_model({"model": str(tiny_llama), "output": str(out)})


@pytest.fixture(scope="module")
def optimum_llama(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("optimum") / "onnx"
    return out, export_model({"model": str(tiny_llama), "output": str(out), "layout": "optimum"})


def _ops(path):
    from collections import Counter

    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _signature(path):
    graph = onnx.load(str(path)).graph

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return [(v.name, v.type.tensor_type.elem_type, dims(v)) for v in (*graph.input, *graph.output)]


def test_fast_graph_replaces_optimum_and_validates(fast_llama):
    out, manifest = fast_llama
    by_name = {p["name"]: p for p in manifest["passes"]}
    assert by_name["fast_graph"]["ran"] and by_name["onnx_export"]["ran"] is False
    assert by_name["onnx_export"]["reason"] == "the fast_graph pass built the graph"
    assert manifest["metrics"]["layout"] == "fast"
    v = manifest["validation"]
    assert v["passed"] and v["greedy_match"] and v["max_abs_diff"] <= v["atol"]
    ops = _ops(out / "model.onnx")
    # 2 layers: one q|k|v, o, gate|up and down MatMul each, plus the LM head; the tied head is stored once.
    assert ops["GroupQueryAttention"] == 2 and ops["MatMul"] == 9 and ops["SkipSimplifiedLayerNormalization"] == 4
    assert manifest["metrics"]["lm_head"] == "tied to the embedding"
    assert "GroupQueryAttention" in (out / "README.md").read_text()  # the card names the contrib ops it needs


def test_fast_graph_keeps_optimums_inputs_and_outputs(fast_llama, optimum_llama):
    assert _signature(fast_llama[0] / "model.onnx") == _signature(optimum_llama[0] / "model.onnx")
    assert "GroupQueryAttention" not in _ops(optimum_llama[0] / "model.onnx")
    skipped = {p["name"]: p for p in optimum_llama[1]["passes"]}["fast_graph"]
    assert skipped == {"name": "fast_graph", "ran": False, "seconds": 0.0, "reason": "--layout optimum"}


def test_left_padded_batch_matches_pytorch_row_by_row(fast_llama, tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    from gptctl.runtime.batch import check_batching
    from gptctl.runtime.session import OrtCausalLM, left_pad

    lm, _ = OrtCausalLM.from_path(fast_llama[0] / "model.onnx", "cpu", threads=1)
    torch_model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    rows = [[5, 17, 33, 80, 99, 120, 7], [9, 8, 7], [40, 41]]
    ids, mask = left_pad(rows)
    out, past = lm.forward(ids, attention_mask=mask)
    nxt = np.array([[11], [12], [13]])
    mask2 = np.concatenate([mask, np.ones((3, 1), dtype=np.int64)], axis=1)
    out2, _ = lm.forward(nxt, past, past_len=ids.shape[1], attention_mask=mask2)
    for i, row in enumerate(rows):
        with torch.no_grad():
            ref = torch_model(torch.tensor([row]), use_cache=True)
            ref2 = torch_model(torch.tensor(nxt[i : i + 1]), past_key_values=ref.past_key_values)
        np.testing.assert_allclose(out["logits"][i, -len(row) :], ref.logits[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(out2["logits"][i, -1], ref2.logits[0, -1].numpy(), atol=1e-4)
    ok, reason = check_batching(lm, rows)
    assert ok, reason


def test_int4_quantizes_the_fused_weights(tiny_llama, tmp_path):
    manifest = export_model({"model": str(tiny_llama), "output": str(tmp_path / "q"), "quantize": "int4"})
    assert manifest["metrics"]["layout"] == "fast" and manifest["validation"]["passed"]
    q = manifest["quantization"]
    assert q["matmuls_quantized"] == q["matmuls_total"] == 9
    assert q["tied_embedding_shared"] and q["lm_head_bits"] == 8
    graph = onnx.load(str(tmp_path / "q" / "model.onnx")).graph
    assert not [n for n in graph.node if n.op_type == "MatMul"]
    widths = {n.name: {a.name: a.i for a in n.attribute}["N"] for n in graph.node if n.op_type == "MatMulNBits"}
    # q|k|v: 4 query heads and 2 + 2 key/value heads of 16; gate|up: 2 x 128.
    assert widths["/model/layers.0/self_attn/qkv_proj/MatMul_Q"] == (4 + 2 * 2) * 16
    assert widths["/model/layers.0/mlp/gate_up_proj/MatMul_Q"] == 2 * 128
    assert {p["name"]: p for p in manifest["passes"]}["compare_converted"]["summary"]["passed"]


def test_qwen2_biases_validate(tiny_model_factory, tmp_path):
    manifest = export_model({"model": str(tiny_model_factory("qwen2")), "output": str(tmp_path / "q")})
    assert manifest["metrics"]["layout"] == "fast"
    assert manifest["validation"]["passed"] and manifest["validation"]["greedy_match"]


def test_other_architectures_skip_with_the_reason(tiny_gpt2, tmp_path):
    manifest = export_model({"model": str(tiny_gpt2), "output": str(tmp_path / "g")})
    by_name = {p["name"]: p for p in manifest["passes"]}
    assert by_name["fast_graph"]["ran"] is False and "'gpt2'" in by_name["fast_graph"]["reason"]
    assert by_name["onnx_export"]["ran"] and manifest["metrics"]["layout"] == "optimum"
    assert manifest["validation"]["passed"]


def _llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = dict(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    kw.update(overrides)
    import torch

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**kw)).eval()


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope type 'dynamic'"),
        ({"hidden_size": 32, "num_attention_heads": 4}, "head size 8"),
        ({"hidden_act": "gelu"}, "activation 'gelu'"),
    ],
    ids=["dynamic-rope", "head-size", "activation"],
)
def test_unsupported_configs_are_named(overrides, words):
    from gptctl.export.llama_graph import unsupported_reason

    assert words in unsupported_reason(_llama(**overrides))


def test_llama3_rope_scaling_is_tabulated_exactly():
    import onnxruntime as ort
    import torch

    from gptctl.export.llama_graph import build_fast_graph, unsupported_reason
    from gptctl.runtime.session import OrtCausalLM

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    model = _llama(rope_scaling={**scaling, "original_max_position_embeddings": 16})
    assert unsupported_reason(model) is None
    session = ort.InferenceSession(build_fast_graph(model).SerializeToString(), providers=["CPUExecutionProvider"])
    lm = OrtCausalLM(session)
    ids = np.array([[1, 5, 9, 2, 33, 60, 7, 8, 21, 3]])
    out, past = lm.forward(ids)
    out2, _ = lm.forward(np.array([[4]]), past, past_len=ids.shape[1])
    with torch.no_grad():
        ref = model(torch.tensor(ids), use_cache=True)
        ref2 = model(torch.tensor([[4]]), past_key_values=ref.past_key_values)
    np.testing.assert_allclose(out["logits"], ref.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(out2["logits"], ref2.logits.numpy(), atol=1e-4)


def test_optimum_runtime_loads_the_fast_artifact(fast_llama, tiny_llama):
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM

    ort_model = ORTModelForCausalLM.from_pretrained(fast_llama[0])
    torch_model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = torch.tensor([[5, 17, 33, 80, 99, 120], [0, 0, 0, 9, 8, 7]])
    mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    kwargs = dict(attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
    assert ort_model.generate(ids, **kwargs).tolist() == torch_model.generate(ids, **kwargs).tolist()
    with torch.no_grad():
        ours = ort_model(input_ids=ids, attention_mask=mask).logits
        ref = torch_model(input_ids=ids, attention_mask=mask).logits
    assert float((ours - ref)[mask.bool()].abs().max()) < 1e-4


def test_optimize_is_skipped_on_the_fast_graph(tiny_llama, tmp_path):
    manifest = export_model({"model": str(tiny_llama), "output": str(tmp_path / "o"), "optimize": True})
    optimize = {p["name"]: p for p in manifest["passes"]}["optimize"]
    assert optimize["ran"] is False and optimize["reason"] == "the fast graph is fused already"
    assert manifest["validation"]["passed"]


def test_positions_past_the_context_still_run_like_pytorch(fast_llama, tiny_llama):
    """transformers rotates any position; the tables cover at least MIN_TABLE_POSITIONS (perplexity windows
    of 512 tokens ran past the tiny model's 128)."""
    import torch
    from transformers import AutoModelForCausalLM

    from gptctl.runtime.session import OrtCausalLM

    lm, _ = OrtCausalLM.from_path(fast_llama[0] / "model.onnx", "cpu", threads=1)
    ids = np.arange(300)[None, :] % 300 + 2
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(lm.forward(ids)[0]["logits"], ref, atol=1e-4)


def test_fp16_conversion_keeps_the_fast_graph_batching_exactly(tiny_llama, tmp_path):
    from gptctl.runtime.batch import check_batching
    from gptctl.runtime.session import OrtCausalLM

    manifest = export_model({"model": str(tiny_llama), "output": str(tmp_path / "h"), "dtype": "fp16"})
    assert manifest["metrics"]["layout"] == "fast" and manifest["validation"]["passed"]
    lm, _ = OrtCausalLM.from_path(tmp_path / "h" / "model.onnx", "cpu", threads=1)
    assert lm.kv_dtype == np.float16 and "GroupQueryAttention" in _ops(tmp_path / "h" / "model.onnx")
    ok, reason = check_batching(lm, [[5, 17, 33, 80, 99, 120, 7], [9, 8, 7]])
    assert ok, reason
