"""Every optimize method on every tiny architecture, checked by its real effect on the weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from gptctl.manifest import sha256_path
from gptctl.model_source import load_causal_lm, resolve_model
from gptctl.optimize import METHODS, optimize, options_model
from gptctl.optimize.targets import block_linears

from tiny_models import ARCHITECTURES, CORPUS


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from threads, and on a busy machine spinning threads cost 10x.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    (d / "train.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in CORPUS) + "\n")
    return d / "train.jsonl"


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load(path):
    return load_causal_lm(resolve_model(str(path)))


def test_public_contract():
    assert METHODS == ("lora", "prompt-tuning", "prune")
    for m in METHODS:
        fields = options_model(m).model_fields
        assert {
            "model",
            "data",
            "eval_data",
            "eval_split",
            "max_length",
            "packing",
            "output",
            "overwrite",
            "seed",
        } <= set(fields)
    assert {
        "rank",
        "alpha",
        "dropout",
        "target_modules",
        "lr",
        "epochs",
        "max_steps",
        "batch_size",
        "grad_accum",
        "warmup",
        "weight_decay",
        "gradient_checkpointing",
        "merge",
        "resume",
    } <= set(options_model("lora").model_fields)
    assert {"num_virtual_tokens", "init_text"} <= set(options_model("prompt-tuning").model_fields)
    assert {"ratio", "method", "scope", "structure"} <= set(options_model("prune").model_fields)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_learns_and_leaves_the_base_alone(arch, tiny_model_factory, corpus, tmp_path):
    base = tiny_model_factory(arch)
    base_hash = sha256_path(base)
    original = _weights(_load(base))
    out = tmp_path / "lora"
    # One batch holds the whole corpus, so every step sees the same data and the loss must fall.
    manifest = optimize(
        "lora",
        {
            "model": str(base),
            "data": str(corpus),
            "eval_data": str(corpus),
            "output": str(out),
            "batch_size": 32,
            "max_steps": 8,
            "lr": 1e-2,
            "dropout": 0.0,
            "merge": True,
        },
    )
    m = manifest["metrics"]
    assert m["loss_last"] < m["loss_first"]
    assert m["ppl_after"] < m["ppl_before"] and m["ppl_change_pct"] < 0
    assert 0 < m["trainable_params"] < m["total_params"]
    assert manifest["step"] == "optimize" and manifest["method"] == "lora"
    assert manifest["inputs"]["model"]["sha256"] == base_hash and manifest["inputs"]["data"]["sha256"]
    assert json.loads((out / "gptctl.json").read_text())["metrics"]["ppl_after"] == m["ppl_after"]

    # The adapter holds only LoRA weights; the base directory and the base weights are untouched.
    assert all("lora_" in k for k in load_file(out / "adapter_model.safetensors"))
    assert sha256_path(base) == base_hash
    src = resolve_model(str(out))
    assert src.kind == "lora-adapter" and src.base.path == base.resolve()
    adapted = load_causal_lm(src)
    for name, w in adapted.get_base_model().state_dict().items():
        plain = name.replace(".base_layer", "")
        if "lora_" not in name:
            assert torch.equal(w, original[plain]), name

    # The merged model is a plain model that computes what base + adapter computes.
    merged = resolve_model(str(out / "merged"))
    assert merged.kind == "hf-dir" and merged.manifest["method"] == "lora"
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        torch.testing.assert_close(load_causal_lm(merged)(ids).logits, adapted(ids).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_prompt_tuning_trains_only_the_virtual_tokens(arch, tiny_model_factory, corpus, tmp_path):
    base = tiny_model_factory(arch)
    original = _weights(_load(base))
    out = tmp_path / "pt"
    manifest = optimize(
        "prompt-tuning",
        {
            "model": str(base),
            "data": str(corpus),
            "eval_split": 0.25,
            "output": str(out),
            "batch_size": 32,
            "max_steps": 6,
            "num_virtual_tokens": 5,
            "init_text": "The patient",
        },
    )
    m = manifest["metrics"]
    hidden = resolve_and_config(base)
    assert m["trainable_params"] == 5 * hidden
    assert m["loss_last"] < m["loss_first"]
    saved = load_file(out / "adapter_model.safetensors")
    assert list(saved) == ["prompt_embeddings"] and saved["prompt_embeddings"].shape == (5, hidden)
    src = resolve_model(str(out))
    assert src.kind == "prompt-adapter"
    model = load_causal_lm(src)
    for name, w in model.get_base_model().state_dict().items():
        assert torch.equal(w, original[name]), name
    # The learned prompt moved away from its initialisation (the embeddings of "The patient").
    emb = model.get_base_model().get_input_embeddings().weight
    start = emb[torch.tensor([5, 6, 7, 8, 9])]  # any real rows: the learned prompt is none of them
    assert not torch.equal(saved["prompt_embeddings"], start)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[5, 6, 7]])).logits).all()


def resolve_and_config(base) -> int:
    cfg = json.loads((base / "config.json").read_text())
    return cfg.get("hidden_size") or cfg.get("n_embd")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_prune_hits_the_ratio_in_every_layer_and_nowhere_else(arch, tiny_model_factory, corpus, tmp_path):
    base = tiny_model_factory(arch)
    original = _load(base)
    before = _weights(original)
    targets = {n + ".weight" for n, _ in block_linears(original)}
    out = tmp_path / "pruned"
    manifest = optimize("prune", {"model": str(base), "ratio": 0.3, "eval_data": str(corpus), "output": str(out)})
    m = manifest["metrics"]
    assert m["sparsity_requested"] == 0.3 and abs(m["sparsity_realised"] - 0.3) < 0.01
    assert m["ppl_before"] and m["ppl_after"] and set(m["per_layer"]) == {t[: -len(".weight")] for t in targets}

    # Plain weights on disk: no masks, no hooks; the model reloads and runs.
    tensors = load_file(out / "model.safetensors")
    assert not any(k.endswith(("_mask", "_orig")) for k in tensors)
    pruned = _load(out)
    after = _weights(pruned)
    for name, w in after.items():
        if name in targets:
            assert abs((w == 0).float().mean().item() - 0.3) < 0.01, name
            kept = w != 0
            assert torch.equal(w[kept], before[name][kept]), name  # survivors are unchanged
        else:
            assert torch.equal(w, before[name]), name  # embeddings, norms, LM head untouched
    with torch.no_grad():
        assert torch.isfinite(pruned(torch.tensor([[5, 6, 7, 8]])).logits).all()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_prune_2_4_wanda_pattern(arch, tiny_model_factory, corpus, tmp_path):
    base = tiny_model_factory(arch)
    out = tmp_path / "pruned"
    m = optimize(
        "prune",
        {
            "model": str(base),
            "method": "wanda",
            "structure": "2:4",
            "data": str(corpus),
            "calib_samples": 8,
            "output": str(out),
        },
    )["metrics"]
    assert m["sparsity_requested"] == 0.5 and m["sparsity_realised"] == 0.5 and m["calibration_s"] is not None
    pruned = _load(out)
    for name, module in block_linears(pruned):
        w = module.weight.detach()
        rows = w.t() if type(module).__name__ == "Conv1D" else w  # (out, in)
        groups = (rows.reshape(rows.shape[0], -1, 4) != 0).sum(-1)
        assert (groups <= 2).all(), name


def test_prune_global_scope_and_wanda_beat_nothing(tiny_model_factory, corpus, tmp_path):
    base = tiny_model_factory("llama")
    g = optimize("prune", {"model": str(base), "ratio": 0.5, "scope": "global", "output": str(tmp_path / "g")})[
        "metrics"
    ]
    assert abs(g["sparsity_realised"] - 0.5) < 0.001
    assert len({round(v["sparsity"], 3) for v in g["per_layer"].values()}) > 1  # one threshold, layers differ
    w = optimize(
        "prune",
        {"model": str(base), "ratio": 0.5, "method": "wanda", "data": str(corpus), "output": str(tmp_path / "w")},
    )["metrics"]
    assert all(abs(v["sparsity"] - 0.5) < 0.01 for v in w["per_layer"].values())


def test_prune_a_lora_output_merges_it_first(tiny_model_factory, corpus, tmp_path):
    base = tiny_model_factory("qwen2")
    optimize("lora", {"model": str(base), "data": str(corpus), "output": str(tmp_path / "lora"), "max_steps": 2})
    manifest = optimize("prune", {"model": str(tmp_path / "lora"), "ratio": 0.3, "output": str(tmp_path / "pruned")})
    assert manifest["parent"]["method"] == "lora"
    assert manifest["inputs"]["model"]["kind"] == "lora-adapter" and manifest["inputs"]["model"]["base"]["sha256"]
    assert resolve_model(str(tmp_path / "pruned")).kind == "hf-dir"


class _StopAt:
    """A Progress that records training losses and interrupts after `stop` steps (a Ctrl-C)."""

    def __init__(self, stop: int | None = None, checkpoint=None):
        self.stop, self.losses, self.checkpoint, self.seen_checkpoint = stop, [], checkpoint, None
        outer = self

        class Task:
            def __init__(self, name):
                self.name = name

            def update(self, advance=1, **fields):
                if self.name == "training" and "loss" in fields:
                    outer.losses.append(fields["loss"])
                    if outer.checkpoint is not None and len(outer.losses) == 3:
                        outer.seen_checkpoint = torch.load(outer.checkpoint, weights_only=True)["step"]
                    if outer.stop is not None and len(outer.losses) == outer.stop:
                        raise KeyboardInterrupt

            def close(self):
                pass

        self._task = Task

    def task(self, description, total=None):
        return self._task(description)

    def info(self, message):
        pass


def test_resume_continues_from_the_saved_step(tiny_model_factory, corpus, tmp_path):
    base = tiny_model_factory("llama")
    opts = {
        "model": str(base),
        "data": str(corpus),
        "batch_size": 4,
        "max_steps": 6,
        "lr": 5e-3,
        "dropout": 0.0,
        "checkpoint_every": 2,
    }
    straight = optimize("lora", {**opts, "output": str(tmp_path / "straight")})["metrics"]

    out = tmp_path / "resumed"
    work = tmp_path / ".resumed.work"
    first = _StopAt(stop=4, checkpoint=work / "checkpoints" / "last.pt")
    with pytest.raises(KeyboardInterrupt):
        optimize("lora", {**opts, "output": str(out)}, progress=first)
    assert first.seen_checkpoint == 2  # the periodic checkpoint was there mid-run
    assert not out.exists()  # nothing that looks finished
    assert torch.load(work / "checkpoints" / "last.pt", weights_only=True)["step"] == 4

    second = _StopAt()
    resumed = optimize("lora", {**opts, "output": str(out), "resume": True}, progress=second)["metrics"]
    assert resumed["resumed_from_step"] == 4 and len(second.losses) == 2  # only steps 5 and 6 ran again
    assert first.losses == pytest.approx([c[1] for c in straight["loss_curve"][:4]], abs=1e-4)
    assert second.losses == pytest.approx([c[1] for c in straight["loss_curve"][4:]], abs=1e-4)
    assert resumed["loss_last"] == pytest.approx(straight["loss_last"], abs=1e-4)
    assert not work.exists() and not (out / "checkpoints").exists()
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(out / "adapter_model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_resume_refuses_a_checkpoint_of_other_options(tiny_model_factory, corpus, tmp_path):
    from gptctl.errors import BadInput

    base = tiny_model_factory("gpt2")
    opts = {"model": str(base), "data": str(corpus), "max_steps": 4, "output": str(tmp_path / "o")}
    with pytest.raises(KeyboardInterrupt):
        optimize("lora", opts, progress=_StopAt(stop=2))
    with pytest.raises(BadInput, match="different inputs or options"):
        optimize("lora", {**opts, "resume": True, "lr": 1e-3})


def test_gradient_checkpointing_and_accumulation_train_the_same(tiny_model_factory, corpus, tmp_path):
    base = tiny_model_factory("qwen2")
    opts = {"model": str(base), "data": str(corpus), "max_steps": 3, "lr": 5e-3, "dropout": 0.0, "batch_size": 4}
    plain = optimize("lora", {**opts, "output": str(tmp_path / "a")})["metrics"]
    checkpointed = optimize("lora", {**opts, "gradient_checkpointing": True, "output": str(tmp_path / "b")})["metrics"]
    assert [c[1] for c in checkpointed["loss_curve"]] == pytest.approx([c[1] for c in plain["loss_curve"]], abs=1e-4)
    accumulated = optimize(
        "lora",
        {**opts, "batch_size": 2, "grad_accum": 2, "warmup": 1, "weight_decay": 0.01, "output": str(tmp_path / "c")},
    )["metrics"]
    assert accumulated["global_batch_size"] == 4 and accumulated["warmup_steps"] == 1 and accumulated["steps"] == 3


def test_a_selection_json_is_an_input_and_its_manifest_the_parent(tiny_model_factory, tmp_path):
    from gptctl.manifest import Manifest

    base = tiny_model_factory("opt")
    pick = tmp_path / "pick"
    pick.mkdir()
    (pick / "selection.json").write_text(json.dumps({"model": {"id": "tiny/opt", "source_path": str(base)}}))
    Manifest(step="select", metrics={"model": "tiny/opt"}).write(pick)
    manifest = optimize("prune", {"model": str(pick / "selection.json"), "ratio": 0.2, "output": str(tmp_path / "p")})
    assert manifest["parent"]["step"] == "select"
    assert (
        manifest["inputs"]["model"]["spec"] == str(base.resolve()) and manifest["inputs"]["model"]["kind"] == "hf-dir"
    )


def test_prune_lm_head_on_request_and_keep_the_stored_dtype(tiny_model_factory, tmp_path):
    base = tiny_model_factory("gpt2")  # tied embeddings
    half = tmp_path / "bf16"
    _load(base).to(torch.bfloat16).save_pretrained(half)
    for f in base.glob("*token*"):
        (half / f.name).write_bytes(f.read_bytes())
    m = optimize("prune", {"model": str(half), "ratio": 0.4, "include_lm_head": True, "output": str(tmp_path / "p")})[
        "metrics"
    ]
    assert m["lm_head_pruned"] and m["lm_head_tied_to_embeddings"]
    assert abs(m["per_layer"]["lm_head"]["sparsity"] - 0.4) < 0.01 and m["per_layer"]["lm_head"]["requested"] == 0.4
    saved = load_file(tmp_path / "p" / "model.safetensors")
    assert {t.dtype for t in saved.values() if t.is_floating_point()} == {torch.bfloat16}  # as stored
    emb = saved["transformer.wte.weight"]
    assert abs((emb == 0).float().mean().item() - 0.4) < 0.01  # tied to the head: pruned with it


def test_max_length_is_clamped_to_the_model_context(tiny_model_factory, corpus, tmp_path):
    base = tiny_model_factory("gpt2")  # 128 positions; the default --max-length is 512
    infos = []

    class Recorder(_StopAt):
        def info(self, message):
            infos.append(message)

    m = optimize(
        "prompt-tuning",
        {
            "model": str(base),
            "data": str(corpus),
            "packing": True,
            "max_steps": 1,
            "num_virtual_tokens": 8,
            "eval_data": str(corpus),
            "output": str(tmp_path / "o"),
        },
        progress=Recorder(),
    )
    assert any("using 120" in i for i in infos)  # 128 positions less 8 virtual tokens
    assert m["inputs"]["data"]["sequences"] >= m["inputs"]["data"]["tokens"] // 120
