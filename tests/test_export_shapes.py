"""Sharing per-layer shape arithmetic (gptctl.export.shapes): same outputs, fewer nodes at run time."""

import numpy as np
import pytest


def _raw_export(model_dir, tmp_path):
    from gptctl.export import onnx_export as ox
    from gptctl.model_source import load_causal_lm, resolve_model

    model = load_causal_lm(resolve_model(str(model_dir)))
    raw = ox.export_with_optimum(model, tmp_path / "raw", task="text-generation-with-past", opset=None)
    return ox.load_onnx(raw)


def _session(proto, tmp_path, name):
    import onnx
    import onnxruntime as ort

    path = tmp_path / f"{name}.onnx"
    onnx.save(proto, str(path))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = str(tmp_path / f"{name}.opt.onnx")
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    nodes = len(onnx.load(so.optimized_model_filepath, load_external_data=False).graph.node)
    return session, nodes


def _feeds(session, batch, seq, past, rng):
    feeds = {}
    for i in session.get_inputs():
        if i.name == "input_ids":
            feeds[i.name] = rng.integers(0, 50, (batch, seq), dtype=np.int64)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((batch, past + seq), dtype=np.int64)
        elif i.name == "position_ids":
            feeds[i.name] = np.broadcast_to(np.arange(past, past + seq), (batch, seq)).astype(np.int64)
        else:  # past_key_values.N.key/value: [batch, kv_heads, past, head_dim]
            feeds[i.name] = rng.standard_normal((batch, int(i.shape[1]), past, int(i.shape[3]))).astype(np.float32)
    return feeds


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_rewired_graph_computes_the_same_with_fewer_nodes(arch, tiny_model_factory, tmp_path):
    import copy

    from gptctl.export.shapes import share_shape_computations

    proto = _raw_export(tiny_model_factory(arch), tmp_path)
    original = copy.deepcopy(proto)
    report = share_shape_computations(proto)
    assert report["applied"] and report["shape_nodes_rewired"] > 0, report
    before, n_before = _session(original, tmp_path, "before")
    after, n_after = _session(proto, tmp_path, "after")
    assert n_after < n_before, (n_before, n_after)
    rng = np.random.default_rng(0)
    # Prefill and decode, batch 1 and 3, empty and non-empty cache: shapes the rewiring must not confuse.
    for batch, seq, past in [(1, 7, 0), (3, 5, 0), (1, 1, 9), (3, 1, 4), (2, 4, 6)]:
        feeds = _feeds(before, batch, seq, past, rng)
        for a, b, name in zip(
            before.run(None, feeds), after.run(None, feeds), [o.name for o in before.get_outputs()], strict=False
        ):  # noqa: E501
            assert a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_export_records_shape_sharing(tiny_llama, tmp_path):
    from gptctl.export import export_model

    # optimum's graph repeats shape arithmetic per layer; the fast graph has none to share
    manifest = export_model({"model": str(tiny_llama), "output": str(tmp_path / "o"), "layout": "optimum"})
    s = manifest["shape_sharing"]
    assert s["applied"] and 0 < s["shape_nodes_rewired"] <= s["shape_nodes"]
    assert manifest["validation"]["passed"]


def test_inference_failure_skips_the_pass():
    from onnx import TensorProto, helper

    from gptctl.export.shapes import share_shape_computations

    # An op the inference does not know: the pass reports why it did nothing and changes nothing.
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.custom")
    shape = helper.make_node("Shape", ["y"], ["s"])
    g = helper.make_graph(
        [node, shape],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("s", TensorProto.INT64, [1])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("example.custom", 1)])
    report = share_shape_computations(m)
    assert report["applied"] is False and report["reason"]
    assert m.graph.node[1].input[0] == "y"
