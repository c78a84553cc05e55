"""Encoders in `gptctl bench`: every declared input fed, sequences/s and latency per batch x length for
ONNX Runtime and PyTorch side by side (no decode figure), and `export` of an encoder without --task."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gptctl.cli.app import app

SMALL = ["--threads", "1", "--iterations", "3", "--warmup", "1", "--prompt-lengths", "8,16", "--batch-sizes", "1,2"]
CELLS = ("b1_s8", "b1_s16", "b2_s8", "b2_s16")


@pytest.fixture(scope="module")
def encoder_artifact(tiny_export_factory):
    return tiny_export_factory("bert", "feature-extraction").parent


@pytest.fixture(scope="module")
def bench(encoder_artifact):
    res = CliRunner().invoke(app, ["bench", str(encoder_artifact), "--provider", "cpu", "--json", *SMALL])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["benchmark"]


def _graph_inputs(artifact):
    import onnx

    return [i.name for i in onnx.load(str(artifact / "model.onnx"), load_external_data=False).graph.input]


def test_tiny_bert_graph_declares_token_type_ids(encoder_artifact):
    # The input the decoder path never fed: without it ORT refuses the run.
    assert "token_type_ids" in _graph_inputs(encoder_artifact)


@pytest.mark.parametrize("backend", ["cpu", "pytorch"])
def test_bench_measures_an_encoder_as_sequences_per_second(bench, backend):
    entry = bench[backend]
    assert entry["available"], entry.get("reason")
    assert entry["kind"] == "encoder"
    grid = entry["encoder_ms"]
    assert grid["iterations"] == 3 and grid["warmup"] == 1
    for key in CELLS:
        cell = grid[key]
        batch = int(key[1:].split("_")[0])
        assert cell["n"] == 3 and 0 < cell["p50"] <= cell["p99"]
        assert cell["sequences_per_s"] == pytest.approx(batch * 1e3 / cell["p50"], rel=1e-2)
    # A decode rate means nothing for an encoder: none is reported.
    for key in ("decode_tokens_per_s", "prefill_ms", "decode_speedup_vs_pytorch"):
        assert key not in entry, key


def test_bench_feeds_every_declared_input(bench, encoder_artifact):
    assert bench["cpu"]["inputs_fed"] == _graph_inputs(encoder_artifact)
    assert "token_type_ids" in bench["pytorch"]["inputs_fed"]


def test_bench_encoder_ratios_vs_pytorch_of_the_same_run(bench):
    cpu, pt = bench["cpu"], bench["pytorch"]
    speedups = cpu["encoder_speedup_vs_pytorch"]
    assert set(speedups) == set(CELLS)
    for key in CELLS:
        assert speedups[key] == pytest.approx(pt["encoder_ms"][key]["p50"] / cpu["encoder_ms"][key]["p50"], rel=1e-2)


def test_bench_renders_an_encoder_table(bench, monkeypatch):
    from rich.console import Console

    from gptctl.cli import common
    from gptctl.cli import export as export_cli

    console = Console(record=True, width=400)
    monkeypatch.setattr(common, "out", console)
    monkeypatch.setattr(export_cli, "out", console)
    export_cli.render_benchmark(bench)
    text = console.export_text()
    assert "encoder" in text and "b2_s16 seq/s" in text and "b2_s16 ms p50" in text
    assert "decode tok/s" not in text and "prefill" not in text


def test_ort_encoder_feeds_every_input_and_matches_pytorch(encoder_artifact, tiny_model_factory):
    import torch
    from transformers import AutoModel

    from gptctl.runtime.encoder import OrtEncoder

    enc, info = OrtEncoder.from_path(encoder_artifact / "model.onnx", "cpu", threads=1)
    assert info["available"]
    ids = np.random.default_rng(0).integers(0, 300, size=(2, 9), dtype=np.int64)
    assert set(enc.feeds(ids)) == set(_graph_inputs(encoder_artifact))
    got = enc.forward(ids)["last_hidden_state"]
    model = AutoModel.from_pretrained(tiny_model_factory("bert")).eval()
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
    assert np.abs(got - ref).max() < 1e-4


def test_encoder_feeds_fill_known_inputs_and_refuse_unknown_ones():
    from gptctl.runtime.encoder import encoder_feeds

    ids = np.array([[5, 6, 7], [8, 9, 10]], dtype=np.int64)
    feeds = encoder_feeds(["input_ids", "attention_mask", "token_type_ids", "position_ids"], ids)
    assert (feeds["attention_mask"] == 1).all() and (feeds["token_type_ids"] == 0).all()
    assert feeds["position_ids"].tolist() == [[0, 1, 2], [0, 1, 2]]
    with pytest.raises(ValueError, match="pixel_values"):
        encoder_feeds(["input_ids", "pixel_values"], ids)


def test_graph_task_tells_an_encoder_from_a_decoder(encoder_artifact, tiny_export_factory):
    from gptctl.runtime.encoder import graph_task

    assert graph_task(encoder_artifact / "model.onnx") == "feature-extraction"
    assert graph_task(tiny_export_factory("gpt2")) == "text-generation-with-past"


def test_export_encoder_without_task_names_feature_extraction(tiny_model_factory, tmp_path):
    out = tmp_path / "onnx"
    res = CliRunner().invoke(app, ["export", "-m", str(tiny_model_factory("bert")), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert "this is an encoder (BertModel): pass --task feature-extraction" in res.stderr
    # Only gptctl's tasks are offered, not optimum's dozen (fill-mask, question-answering, ...).
    assert "fill-mask" not in res.output and "question-answering" not in res.output
    assert "Traceback" not in res.output and not out.exists()


def test_export_encoder_refused_before_the_model_loads(tiny_model_factory, tmp_path, monkeypatch):
    import gptctl.model_source

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the task was checked")

    monkeypatch.setattr(gptctl.model_source, "load_causal_lm", no_load)
    from gptctl.errors import BadInput
    from gptctl.export import export_model

    with pytest.raises(BadInput, match="pass --task feature-extraction"):
        export_model(
            {"model": str(tiny_model_factory("bert")), "output": str(tmp_path / "o"), "task": "text-generation"}
        )


def test_bench_table_puts_onnx_runtime_and_pytorch_side_by_side(bench, monkeypatch):
    # One row per backend, each with its own latency and sequences/s in every batch x length cell.
    from rich.console import Console

    from gptctl.cli import common
    from gptctl.cli import export as export_cli

    console = Console(record=True, width=600)
    monkeypatch.setattr(common, "out", console)
    monkeypatch.setattr(export_cli, "out", console)
    export_cli.render_benchmark(bench)
    lines = console.export_text().splitlines()
    for backend in ("cpu", "pytorch"):
        row = next((line for line in lines if line.strip("│ ").startswith(backend)), None)
        assert row is not None, f"no {backend} row:\n" + "\n".join(lines)
        for key in CELLS:
            cell = bench[backend]["encoder_ms"][key]
            assert export_cli._fmt(cell["sequences_per_s"], ".1f") in row
            assert export_cli._fmt(cell["p50"], ".2f") in row
