"""Weight-only int4/int8 (MatMulNBits) with the LM head included, and perplexity next to fp32."""

import pytest

EVAL_TEXT = (
    "The patient was given aspirin for the headache and rested at home. "
    "The doctor listened to the heart and lungs and wrote a short note. "
    "A nurse measured the blood pressure twice before the visit ended. "
) * 3


@pytest.mark.parametrize("bits", ["int4", "int8"])
def test_quantized_export_reports_perplexity(bits, tiny_llama, tmp_path):
    import onnx
    from optimum.onnxruntime import ORTModelForCausalLM

    from gptctl.export import export_model

    eval_file = tmp_path / "eval.txt"
    eval_file.write_text(EVAL_TEXT)
    out = tmp_path / "onnx"
    manifest = export_model(
        {"model": str(tiny_llama), "output": str(out), "quantize": bits, "eval_data": str(eval_file)}
    )
    m = manifest["metrics"]
    assert m["ppl_fp32"] > 1 and m["ppl_quantized"] > 1 and m["eval_tokens"] > 10
    assert m["ppl_ratio"] == pytest.approx(m["ppl_quantized"] / m["ppl_fp32"], rel=1e-3)
    q = manifest["quantization"]
    assert q["bits"] == (4 if bits == "int4" else 8) and q["block_size"] == 32
    assert q["lm_head_quantized"] is True
    # The fp32 graph was validated before quantization, and says so.
    assert manifest["validation"]["passed"] and "fp32" in manifest["validation"]["checked_graph"]
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in graph.graph.node]
    assert "MatMulNBits" in ops
    producer = {o: n for n in graph.graph.node for o in n.output}
    assert producer["logits"].op_type == "MatMulNBits"  # the LM head itself is quantized
    if bits == "int4":
        assert "GatherBlockQuantized" in ops  # and the embedding table too: no fp32 vocab matrix left
    assert not (out / ".fp32").exists()
    ORTModelForCausalLM.from_pretrained(out)  # still a loadable artifact


@pytest.mark.parametrize("head_bits", [4, 8])
def test_lm_head_bits(head_bits, tiny_llama, tmp_path):
    # int4 keeps the LM head at 8 bits by default (quality); --head-bits 4 makes it 4-bit like the rest.
    import onnx

    from gptctl.export import export_model

    out = tmp_path / "onnx"
    manifest = export_model({"model": str(tiny_llama), "output": str(out), "quantize": "int4", "head_bits": head_bits})
    assert manifest["quantization"]["lm_head_bits"] == head_bits
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    head = {o: n for n in graph.graph.node for o in n.output}["logits"]
    assert head.op_type == "MatMulNBits" and {a.name: a.i for a in head.attribute}["bits"] == head_bits


def test_head_bits_4_needs_int4(tiny_llama, tmp_path):
    from gptctl.errors import BadInput
    from gptctl.export import export_model

    with pytest.raises(BadInput, match="head-bits 4 only applies with --quantize int4"):
        export_model({"model": str(tiny_llama), "output": str(tmp_path / "o"), "quantize": "int8", "head_bits": 4})


def test_eval_data_problems_are_bad_input(tiny_llama, tmp_path):
    from gptctl.errors import BadInput
    from gptctl.export import export_model

    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"text": "fine"}\n{"nope": 1}\n')
    with pytest.raises(BadInput, match=r"eval.jsonl:2"):
        export_model(
            {"model": str(tiny_llama), "output": str(tmp_path / "o"), "quantize": "int4", "eval_data": str(bad)}
        )
    assert not (tmp_path / "o").exists()


def _matmul_graph(w, k, n):
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("MatMul", ["A", "W"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [2, 3, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3, n])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize("grid", [True, False])
def test_weights_already_on_a_4bit_grid_are_repacked_exactly(grid):
    """GGUF Q4_1 weights (w = d*j + m per block of 32) survive int4 MatMulNBits nearly exactly;
    plain RTN with an integer zero point would shift whole blocks."""
    import numpy as np
    import onnxruntime as ort

    from gptctl.export.quant.matmulnbits import replace_matmuls

    rng = np.random.default_rng(0)
    k, n, bs = 96, 40, 32
    d = rng.uniform(0.01, 0.05, (n, k // bs))
    m = rng.uniform(-0.3, 0.1, (n, k // bs))
    j = rng.integers(0, 16, (n, k // bs, bs))
    j[..., 0], j[..., 1] = 0, 15
    w = (d[..., None] * j + m[..., None]).reshape(n, k).T.astype(np.float32)
    model = _matmul_graph(w, k, n)
    report = replace_matmuls(model, bits=4, block_size=bs, accuracy_level=0, exact_grid=grid)
    assert report["exact_grid"] == (1 if grid else 0)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = rng.standard_normal((2, 3, k)).astype(np.float32)
    err = float(np.abs(session.run(None, {"A": a})[0] - a @ w).max())
    if grid:
        assert err < 0.01
    else:
        assert err > 0.1  # what the exact repack avoids


def test_rtn_roundtrip_error_is_within_half_a_step():
    import numpy as np

    from gptctl.export.quant.matmulnbits import dequantize, quantize_matmul_weight

    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 24)).astype(np.float32)
    for bits in (4, 8):
        parts = quantize_matmul_weight(w, bits, 32, exact_grid=False)
        back = dequantize(parts, 64, 24, bits, 32)
        step = parts["scales"].reshape(24, 2).max()
        assert np.abs(back - w).max() <= step / 2 + 1e-6


def test_export_perplexity_is_optimize_perplexity(tiny_llama, tmp_path):
    # One definition across the pipeline: the fp32 graph's perplexity on --eval-data equals what
    # `gptctl optimize` measures for the same weights on the same file (PyTorch), up to float error.
    from gptctl.export import export_model
    from gptctl.model_source import load_causal_lm, load_tokenizer, resolve_model
    from gptctl.optimize.data import read_records, tokenize
    from gptctl.optimize.evaluate import perplexity

    eval_file = tmp_path / "eval.txt"
    eval_file.write_text(EVAL_TEXT.replace(". ", ".\n\n"))  # several samples, one per paragraph
    source = resolve_model(str(tiny_llama))
    tok = load_tokenizer(source)
    data = tokenize(read_records(eval_file), tok, max_length=512, packing=False, path=str(eval_file), for_eval=True)
    torch_ppl = perplexity(load_causal_lm(source), data, batch_size=4, pad_id=tok.pad_token_id or 0)
    m = export_model(
        {"model": str(tiny_llama), "output": str(tmp_path / "o"), "quantize": "int8", "eval_data": str(eval_file)}
    )["metrics"]
    assert len(data.samples) > 3 and m["eval_tokens"] == torch_ppl["tokens"]
    assert m["ppl_fp32"] == pytest.approx(torch_ppl["ppl"], rel=1e-4)
