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
    manifest = export_model({"model": str(tiny_llama), "output": str(out), "quantize": bits, "eval_data": str(eval_file)})
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


def test_eval_data_problems_are_bad_input(tiny_llama, tmp_path):
    from gptctl.errors import BadInput
    from gptctl.export import export_model

    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"text": "fine"}\n{"nope": 1}\n')
    with pytest.raises(BadInput, match=r"eval.jsonl:2"):
        export_model({"model": str(tiny_llama), "output": str(tmp_path / "o"), "quantize": "int4", "eval_data": str(bad)})
    assert not (tmp_path / "o").exists()
