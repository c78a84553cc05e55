"""Export + validate + run on tiny GPT-2 and Llama; the artifact loads with optimum's ORTModelForCausalLM."""

import json

import numpy as np
import pytest

from gptctl.export import ExportOptions, export_model


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def exported(request, tiny_model_factory, tmp_path_factory):
    model_dir = tiny_model_factory(request.param)
    out = tmp_path_factory.mktemp(f"export-{request.param}") / "onnx"
    manifest = export_model(ExportOptions(model=str(model_dir), output=str(out)))
    return request.param, model_dir, out, manifest


def test_manifest_records_validation_and_metrics(exported):
    arch, model_dir, out, manifest = exported
    on_disk = json.loads((out / "gptctl.json").read_text())
    assert on_disk["step"] == "export" and on_disk["method"] == "onnx"
    assert on_disk["inputs"]["model"]["kind"] == "hf-dir"
    assert len(on_disk["inputs"]["model"]["sha256"]) == 64
    v = on_disk["validation"]
    assert v["passed"] is True and v["greedy_match"] is True and v["greedy_tokens"] == 16
    assert v["max_abs_diff"] <= v["atol"]
    # Every output is compared, for the prefill and for one decode step with the cache.
    assert set(v["outputs"]) == {"logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"}
    assert all({"prefill", "decode", "max"} <= set(d) for d in v["outputs"].values())
    assert on_disk["metrics"]["size_bytes"] > 0 and on_disk["metrics"]["export_wall_s"] > 0
    assert on_disk["outputs"]["model.onnx"]["sha256"]
    # Tokenizer and configs travel with the graph; no leftovers of the staging directories.
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "gptctl.json"} <= names
    assert not any(n.startswith(".") for n in names)
    # The tied LM head is stored once.
    assert on_disk["metrics"]["lm_head"] == "tied to the embedding"


def test_output_loads_with_optimum_and_generates_like_pytorch(exported):
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM

    arch, model_dir, out, _ = exported
    ort_model = ORTModelForCausalLM.from_pretrained(out)
    torch_model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([[5, 17, 33, 80, 99, 120]])
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert ort_model.generate(ids, **kwargs).tolist() == torch_model.generate(ids, **kwargs).tolist()


def test_gptctl_greedy_loop_matches_pytorch(exported):
    import torch
    from transformers import AutoModelForCausalLM

    from gptctl.runtime.session import OrtCausalLM

    arch, model_dir, out, _ = exported
    lm, info = OrtCausalLM.from_path(out / "model.onnx", "cpu", threads=1)
    assert info["available"] and info["active_providers"][0] == "CPUExecutionProvider"
    torch_model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = np.array([[3, 9, 27, 81, 243]], dtype=np.int64)
    eos = torch_model.generation_config.eos_token_id
    ours = lm.greedy(ids, 6, suppress_ids=[eos])
    x = torch.from_numpy(ids)
    ref = torch_model.generate(
        x, attention_mask=torch.ones_like(x), max_new_tokens=6, min_new_tokens=6, do_sample=False
    )
    assert ours[0].tolist() == ref[0, -6:].tolist()
    # IO binding (used on CUDA) gives the same tokens on CPU.
    lm.io_binding = True
    assert lm.greedy(ids, 6, suppress_ids=[eos]).tolist() == ours.tolist()


def test_existing_output_is_refused_before_loading(tiny_gpt2, tmp_path):
    from gptctl.errors import BadInput

    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(BadInput, match="not empty"):
        export_model({"model": str(tiny_gpt2), "output": str(out)})
    assert (out / "keep.txt").read_text() == "x"


def test_feature_extraction_task(tiny_gpt2, tmp_path):
    manifest = export_model({"model": str(tiny_gpt2), "output": str(tmp_path / "fe"), "task": "feature-extraction"})
    v = manifest["validation"]
    assert v["passed"] and set(v["outputs"]) == {"last_hidden_state"}
    assert v["greedy_match"] is None


@pytest.mark.parametrize("arch, fused", [("gpt2", "SkipLayerNormalization"), ("llama", "RotaryEmbedding")])
def test_optimize_applies_fusions_and_still_validates(arch, fused, tiny_model_factory, tmp_path):
    # ORT's fusions run on optimum's layout (the fast Llama graph skips them: tests/test_export_gqa.py).
    opts = {"model": str(tiny_model_factory(arch)), "output": str(tmp_path / "opt"), "optimize": True}
    manifest = export_model({**opts, "layout": "optimum"})
    opt = manifest["optimization"]
    assert opt["applied"] and opt["nodes_after"] < opt["nodes_before"] and fused in opt["fused"]
    assert manifest["validation"]["passed"] and manifest["validation"]["greedy_match"]


def test_optimize_reports_unsupported_architecture(tiny_model_factory, tmp_path):
    manifest = export_model(
        {"model": str(tiny_model_factory("opt")), "output": str(tmp_path / "opt"), "optimize": True}
    )
    assert manifest["optimization"]["applied"] is False and "opt" in manifest["optimization"]["reason"]
    assert manifest["validation"]["passed"]
