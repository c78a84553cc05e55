"""Corrupt or incomplete model files are bad input: exit 2, one sentence naming the file, nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from gptctl.cli.app import app

from tiny_models import CORPUS


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in CORPUS) + "\n")
    return path


def _copy(src, tmp_path, name="model"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _truncated_safetensors(tiny_gpt2, tmp_path):
    model = _copy(tiny_gpt2, tmp_path)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return model, weights


def _unknown_model_type(tiny_gpt2, tmp_path):
    model = _copy(tiny_gpt2, tmp_path)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "model_type": "no-such-arch"}))
    return model, model / "config.json"


def _missing_tokenizer(tiny_gpt2, tmp_path):
    model = _copy(tiny_gpt2, tmp_path)
    for f in model.glob("*token*"):
        f.unlink()
    return model, model


def _broken_tokenizer(tiny_gpt2, tmp_path):
    model = _copy(tiny_gpt2, tmp_path)
    tok = model / "tokenizer.json"
    tok.write_text(tok.read_text()[:500])
    return model, tok


def _not_gguf(tiny_gpt2, tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04" + b"\0" * 100)  # a zip, renamed
    return fake, fake


def _adapter_without_base(tiny_gpt2, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    missing = tmp_path / "gone-base"
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(missing)})
    )
    return adapter, missing


CASES = {
    "truncated safetensors": (_truncated_safetensors, "truncated or corrupt"),
    "unknown model_type": (_unknown_model_type, "no-such-arch"),
    "missing tokenizer": (_missing_tokenizer, "has no tokenizer"),
    "broken tokenizer": (_broken_tokenizer, "not readable JSON"),
    "not a gguf": (_not_gguf, "is not a GGUF file"),
    "adapter without base": (_adapter_without_base, "base model of adapter"),
}


def _check(result, named, expected, out):
    text = " ".join((result.stdout + result.stderr).split())
    assert result.exit_code == 2, text
    assert "Traceback" not in text and "--debug" not in text, text
    assert str(named) in text and expected in text, text
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))  # no working or partial directory left either


@pytest.mark.parametrize("case", sorted(CASES))
def test_optimize_lora_refuses(case, tiny_gpt2, data, tmp_path):
    make, expected = CASES[case]
    model, named = make(tiny_gpt2, tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["optimize", "lora", "--model", str(model), "--data", str(data), "--max-steps", "1", "--output", str(out)]
    )
    _check(result, named, expected, out)


@pytest.mark.parametrize("case", ["truncated safetensors", "unknown model_type", "not a gguf"])
def test_optimize_prune_refuses(case, tiny_gpt2, tmp_path):
    make, expected = CASES[case]
    model, named = make(tiny_gpt2, tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["optimize", "prune", "--model", str(model), "--ratio", "0.3", "--output", str(out)]
    )
    _check(result, named, expected, out)


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_refuses(case, tiny_gpt2, tmp_path):
    make, expected = CASES[case]
    model, named = make(tiny_gpt2, tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", "--model", str(model), "--output", str(out)])
    _check(result, named, expected, out)


def test_truncated_adapter_weights(tiny_gpt2, data, tmp_path):
    from gptctl.optimize import optimize

    adapter = tmp_path / "lora"
    optimize("lora", {"model": str(tiny_gpt2), "data": str(data), "max_steps": 1, "output": str(adapter)})
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["optimize", "prune", "--model", str(adapter), "--ratio", "0.3", "--output", str(out)]
    )
    _check(result, weights, "truncated or corrupt", out)


def _onnx_artifact(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    art = tmp_path / "art"
    art.mkdir()
    w = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [w],
    )
    onnx.save(helper.make_model(graph), art / "model.onnx")
    (art / "config.json").write_text(json.dumps({"vocab_size": 64}))
    return art


def test_bench_refuses_a_truncated_onnx(tmp_path):
    from gptctl.runtime.artifact import check_onnx_file

    art = _onnx_artifact(tmp_path)
    check_onnx_file(art / "model.onnx")  # whole: accepted
    graph = art / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    before = sorted(p.name for p in art.iterdir())
    result = CliRunner().invoke(app, ["bench", str(art), "--no-baseline"])
    text = " ".join((result.stdout + result.stderr).split())
    assert result.exit_code == 2, text
    assert str(graph) in text and "truncated or corrupt" in text and "Traceback" not in text
    assert sorted(p.name for p in art.iterdir()) == before


def test_truncated_external_data_is_named(tmp_path):
    import onnx

    from gptctl.errors import BadInput
    from gptctl.runtime.artifact import check_onnx_file

    art = _onnx_artifact(tmp_path)
    model = onnx.load(art / "model.onnx")
    onnx.save(model, art / "model.onnx", save_as_external_data=True, location="model.onnx_data", size_threshold=0)
    check_onnx_file(art / "model.onnx")
    data = art / "model.onnx_data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(BadInput, match="model.onnx_data is truncated"):
        check_onnx_file(art / "model.onnx")


def test_the_cheap_checks_accept_good_files(tiny_gpt2):
    from gptctl.model_source import check_safetensors_file, check_tokenizer_files, resolve_model

    check_safetensors_file(tiny_gpt2 / "model.safetensors")
    check_tokenizer_files(tiny_gpt2)
    assert resolve_model(str(tiny_gpt2)).kind == "hf-dir"
