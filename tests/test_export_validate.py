"""Validation gates: a difference over atol or a differing token fails (exit 1), never warns."""

import numpy as np
import pytest

from gptctl.errors import CheckFailed


def test_tampered_graph_fails_validation_with_figures(tiny_llama, tmp_path):
    import onnx
    from onnx import numpy_helper
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gptctl.export import export_model
    from gptctl.export.validate import TorchReference, raise_if_failed, validate_decoder

    out = tmp_path / "onnx"
    export_model({"model": str(tiny_llama), "output": str(out)})
    graph = onnx.load(str(out / "model.onnx"))
    # Tamper with one projection weight of layer 1, as a broken exporter would.
    target = next(t for t in graph.graph.initializer if len(t.dims) == 2 and t.dims[0] == 64 and t.dims[1] == 128)
    w = numpy_helper.to_array(target).copy()
    w += 0.05
    target.CopyFrom(numpy_helper.from_array(w, target.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(graph, str(tampered))

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    v = validate_decoder(
        tampered, TorchReference(model), tok, atol=1e-3, greedy_tokens=8, vocab_size=model.config.vocab_size
    )
    assert v["passed"] is False and v["max_abs_diff"] > 1e-3
    with pytest.raises(CheckFailed) as err:
        raise_if_failed(v)
    assert err.value.exit_code == 1
    assert "atol" in err.value.message and any("logits" in d for d in err.value.details)


def test_tiny_atol_fails_and_writes_nothing(tiny_gpt2, tmp_path):
    from gptctl.export import export_model

    out = tmp_path / "onnx"
    with pytest.raises(CheckFailed, match="validation failed"):
        export_model({"model": str(tiny_gpt2), "output": str(out), "atol": 1e-12})
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnx")]  # no half-written staging dir


def test_fixed_inputs_are_deterministic_real_tokens(tiny_gpt2):
    from transformers import AutoTokenizer

    from gptctl.export.validate import fixed_inputs

    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    a, b = fixed_inputs(tok, len(tok)), fixed_inputs(tok, len(tok))
    assert a.shape == (2, 12) and np.array_equal(a, b) and not np.array_equal(a[0], a[1])
