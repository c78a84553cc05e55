"""The searched quantization methods (gptctl/export/quant/planned.py and its grids) on tiny models."""

import numpy as np
import pytest

CALIBRATION_TEXT = (
    "The pharmacist counted the tablets twice and wrote the dose on the label. "
    "A nurse checked the allergy list before the first dose was given. "
) * 4


def _pruned(rng, k=128, n=64, ratio=0.3):
    w = rng.standard_normal((k, n)).astype(np.float32) * 0.05
    w[rng.random(w.shape) < ratio] = 0.0
    w[rng.random(w.shape) < 0.01] *= 8  # a few outliers stretch each block's range, as in real layers
    return w


def test_symmetric_grid_keeps_pruned_zeros_exact():
    from gptctl.export.quant.rewrite import dequantize_parts, rows_grid
    from gptctl.export.quant.search import symmetric_search

    rng = np.random.default_rng(0)
    w = _pruned(rng)
    q, s, z = rows_grid(symmetric_search)(w, 4, 32, None)
    wq = dequantize_parts(q, s, z, w.shape[0])
    assert np.all(wq[w == 0] == 0)
    assert np.all(z == 8)  # symmetric: 0 on level 8 of every block


def test_search_has_less_error_than_round_to_nearest():
    from gptctl.export.quant.rewrite import dequantize_parts, rows_grid
    from gptctl.export.quant.rtn import rtn_blocks
    from gptctl.export.quant.search import asymmetric_search, symmetric_search

    rng = np.random.default_rng(1)
    w = _pruned(rng)

    def err(fn):
        q, s, z = rows_grid(fn)(w, 4, 32, None)
        return float(((dequantize_parts(q, s, z, w.shape[0]) - w) ** 2).sum())

    rtn_sym = err(lambda r, b, imp: rtn_blocks(r, b, True))
    rtn_asym = err(lambda r, b, imp: rtn_blocks(r, b, False))
    assert err(symmetric_search) < rtn_sym
    assert err(asymmetric_search) < rtn_asym


def test_importance_moves_error_off_important_channels():
    from gptctl.export.quant.rewrite import dequantize_parts, rows_grid
    from gptctl.export.quant.search import symmetric_search

    rng = np.random.default_rng(2)
    w = _pruned(rng)
    imp = np.ones(w.shape[0])
    imp[::32] = 1000.0  # one hot channel per block, as SmolLM2's outlier channels
    grid = rows_grid(symmetric_search)
    plain = dequantize_parts(*grid(w, 4, 32, None), w.shape[0])
    weighted = dequantize_parts(*grid(w, 4, 32, {"importance": imp}), w.shape[0])

    def werr(wq):
        return float((imp[:, None] * (wq - w) ** 2).sum())

    assert werr(weighted) < werr(plain)


def test_gptq_lowers_output_error_against_search():
    from gptctl.export.quant.gptq import gptq_grid
    from gptctl.export.quant.rewrite import dequantize_parts, rows_grid
    from gptctl.export.quant.search import symmetric_search

    rng = np.random.default_rng(3)
    k, n = 128, 48
    x = rng.standard_normal((1024, k)) @ (np.eye(k) + 0.5 * rng.standard_normal((k, k)) / np.sqrt(k))
    w = rng.standard_normal((k, n)) * 0.05
    h = x.T @ x / len(x)
    stats = {"importance": np.diag(h), "hessian": h}

    def out_err(grid):
        return float(((x @ (dequantize_parts(*grid(w, 4, 32, stats), k) - w)) ** 2).mean())

    assert out_err(gptq_grid) < out_err(rows_grid(symmetric_search))


def test_mixed_rule_is_llama_cpp_use_more_bits():
    from gptctl.export.quant.mixed import promoted_weights, use_more_bits

    assert [i for i in range(30) if use_more_bits(i, 30)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
    names = {f"w{i}{k}": {"layer": i, "kind": k} for i in range(8) for k in ("q_proj", "v_proj", "down_proj")}
    chosen = promoted_weights(names)
    assert chosen and all(names[w]["kind"] in ("v_proj", "down_proj") for w in chosen)
    assert {names[w]["layer"] for w in chosen} == {i for i in range(8) if use_more_bits(i, 8)}


@pytest.mark.parametrize("method", ["int4", "int4-mixed", "int4-gptq", "int8"])
def test_method_exports_validates_and_manifests(method, tiny_llama, tmp_path):
    import onnx

    from gptctl.export import export_model

    cal = tmp_path / "cal.txt"
    cal.write_text(CALIBRATION_TEXT)
    out = tmp_path / "onnx"
    manifest = export_model(
        {
            "model": str(tiny_llama),
            "output": str(out),
            "quantize": method,
            "calibration_data": str(cal),
            "eval_data": str(cal),
            "min_top1_agreement": 0,
            "min_greedy_prefix": 0,
            "max_ppl_ratio": 100,
        }
    )
    q = manifest["quantization"]
    assert q["method"] == method and q["calibration"]["tokens"] > 10
    assert q["matmuls_quantized"] == q["matmuls_total"]
    assert all("bits" in c and "grid" in c and "rel_error" in c for c in q["weights"].values())
    assert all(c["rel_error"] < 0.2 for c in q["weights"].values())
    gate = manifest["validation"]["converted_vs_fp32"]
    assert gate["passed"] is True and manifest["validation"]["passed"] is True
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    inits = {t.name for t in graph.graph.initializer}
    assert any(n.op_type == "MatMulNBits" for n in graph.graph.node)
    assert not [n for n in graph.graph.node if n.op_type == "MatMul" and n.input[1] in inits]  # no fp32 weight left
    if method == "int4-mixed":
        assert q["mixed_8bit_weights"] and q["weights_8bit"] > len(q["mixed_8bit_weights"]) - 1
    if method == "int4-gptq":
        assert {c["grid"] for c in q["weights"].values()} == {"gptq"}


def test_tied_embedding_is_stored_once(tiny_model_factory, tmp_path):
    import onnx

    from gptctl.export import export_model

    model = tiny_model_factory("qwen2")  # tiny qwen2 ties its embedding and LM head
    import json

    if not json.loads((model / "config.json").read_text()).get("tie_word_embeddings"):
        pytest.skip("the tiny qwen2 does not tie its embedding")
    out = tmp_path / "onnx"
    manifest = export_model(
        {"model": str(model), "output": str(out), "quantize": "int4", "min_top1_agreement": 0, "min_greedy_prefix": 0}
    )
    q = manifest["quantization"]
    assert q["tied_embedding_shared"] and q["lm_head_bits"] == 8
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    gbq = [n for n in graph.graph.node if n.op_type == "GatherBlockQuantized"]
    head = {o: n for n in graph.graph.node for o in n.output}["logits"]
    reshape = {o: n for n in graph.graph.node for o in n.output}[head.input[1]]
    assert gbq and reshape.op_type == "Reshape" and reshape.input[0] == gbq[0].input[0]


def test_int4_keeps_a_gguf_grid_exact(tiny_llama, tmp_path):
    """Weights already on a 4-bit grid (GGUF-origin) bypass the search: the exact repack."""
    import onnx
    from onnx import helper, numpy_helper

    from gptctl.export.quant.planned import INT4

    rng = np.random.default_rng(4)
    k, n, bs = 64, 32, 32
    d = rng.uniform(0.01, 0.05, (k // bs, n))
    m = rng.uniform(-0.3, 0.0, (k // bs, n))
    j = rng.integers(0, 16, (k, n))
    j[::bs], j[1::bs] = 0, 15  # as Q4_1 sets them: each block's min and max are levels 0 and 15
    w = (np.repeat(d, bs, 0) * j + np.repeat(m, bs, 0)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["logits_pre"]), helper.make_node("Identity", ["logits_pre"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(w, "W")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    opts = type("Opts", (), {"block_size": bs, "head_bits": 8})()
    proto, report = INT4.quantize(proto, opts, calibration=None)
    assert report["exact_grid_weights"] == 1 and report["weights"]["W"]["grid"] == "exact"
    import onnxruntime as ort

    x = rng.standard_normal((1, k)).astype(np.float32)
    y = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    # accuracy_level 4 rounds the activations to int8 per block (~0.5% here); the weights are exact.
    assert np.abs(y - x @ w).max() < 2e-2 * np.abs(x @ w).max()


def test_gptq_without_calibration_is_bad_input(tiny_llama, tmp_path):
    from gptctl.errors import BadInput
    from gptctl.export import export_model

    with pytest.raises(BadInput, match="calibration"):
        export_model({"model": str(tiny_llama), "output": str(tmp_path / "o"), "quantize": "int4-gptq"})
