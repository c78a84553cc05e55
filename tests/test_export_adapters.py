"""Adapters from `gptctl optimize`: LoRA is merged (and checked), a prompt-tuning soft prompt is folded in.

The adapters are built here with peft directly, in the layout gptctl optimize writes (adapter files,
tokenizer, and a gptctl.json naming the base model).
"""

import numpy as np
import pytest


def _make_adapter(kind, base_dir, out_dir):
    import torch
    from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gptctl.manifest import Manifest

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    if kind == "lora":
        cfg = LoraConfig(
            r=4,
            lora_alpha=16,
            target_modules=["q_proj", "v_proj", "down_proj"],
            task_type=TaskType.CAUSAL_LM,
            init_lora_weights=False,
        )
    else:
        cfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=6)
    peft_model = get_peft_model(model, cfg)
    if kind == "prompt":
        with torch.no_grad():  # a trained-looking prompt: large enough to change what the model says
            peft_model.prompt_encoder["default"].embedding.weight.normal_(0, 2.0)
    peft_model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    Manifest(
        step="optimize",
        method="lora" if kind == "lora" else "prompt-tuning",
        inputs={"model": {"spec": str(base_dir), "kind": "hf-dir"}},
    ).write(out_dir)
    return peft_model.eval()


def _generate(model, ids, n=10):
    import torch

    x = torch.tensor(ids)
    with torch.inference_mode():
        seq = model.generate(
            input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, do_sample=False
        )
    return seq[:, -n:].tolist()


@pytest.mark.parametrize("kind", ["lora", "prompt"])
def test_adapter_export_reproduces_peft_generation(kind, tiny_llama, tmp_path):
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM

    from gptctl.export import export_model

    adapter = tmp_path / f"{kind}-adapter"
    peft_model = _make_adapter(kind, tiny_llama, adapter)
    manifest = export_model({"model": str(adapter), "output": str(tmp_path / "onnx")})

    assert manifest["inputs"]["model"]["kind"] == ("lora-adapter" if kind == "lora" else "prompt-adapter")
    assert manifest["parent"]["step"] == "optimize"
    assert manifest["inputs"]["base_model"]["kind"] == "hf-dir"
    v = manifest["validation"]
    assert v["passed"] and v["greedy_match"]

    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = [[5, 17, 33, 80, 99, 120, 7]]
    x = torch.tensor(ids)
    with torch.inference_mode():
        adapter_logits = peft_model(input_ids=x).logits[:, -len(ids[0]) :]
        base_logits = base(input_ids=x).logits
    # The adapter really changes the model, so matching it is not matching the base model by accident.
    assert float((adapter_logits - base_logits).abs().max()) > 1e-2

    ort_model = ORTModelForCausalLM.from_pretrained(tmp_path / "onnx")
    assert _generate(ort_model, ids) == _generate(peft_model, ids)
    if kind == "lora":
        merge = v["lora_merge"]
        assert merge["passed"] and merge["max_abs_diff"] <= merge["atol"]
    else:
        assert manifest["metrics"]["prompt_virtual_tokens"] == 6
    # The artifact's own logits follow the adapter, not the base model.
    with torch.inference_mode():
        ort_logits = ort_model(input_ids=x, attention_mask=torch.ones_like(x)).logits
    assert float((ort_logits - adapter_logits).abs().max()) < 1e-3
    assert float((ort_logits - base_logits).abs().max()) > 1e-2


def test_prompt_folding_matches_peft_logits_with_cache(tiny_gpt2, tmp_path):
    """GPT-2 (learned positions): prefill and cached decode logits equal peft's, per step."""
    import torch

    from gptctl.export import export_model
    from gptctl.runtime.session import OrtCausalLM

    adapter = tmp_path / "prompt-adapter"
    peft_model = _make_adapter("prompt", tiny_gpt2, adapter)
    export_model({"model": str(adapter), "output": str(tmp_path / "onnx")})
    lm, _ = OrtCausalLM.from_path(tmp_path / "onnx" / "model.onnx", "cpu", threads=1)
    ids = np.array([[11, 22, 33, 44]], dtype=np.int64)
    out, past = lm.forward(ids)
    with torch.inference_mode():
        ref = peft_model(input_ids=torch.from_numpy(ids)).logits[:, 6:].numpy()
    assert np.abs(out["logits"] - ref).max() < 1e-4
    # The cache handed back excludes the virtual tokens: callers see a plain decoder.
    assert out["present.0.key"].shape[2] == ids.shape[1]
    assert (
        _generate(peft_model, ids.tolist(), 6)
        == lm.greedy(ids, 6, suppress_ids=[peft_model.get_base_model().config.eos_token_id]).tolist()
    )
