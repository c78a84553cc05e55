"""Export as a list of passes (gptctl.export.passes), the quantization registry, the model card, and
nothing written outside --output."""

import json
import logging
from pathlib import Path

import pytest

EVAL_TEXT = "The nurse measured the blood pressure twice.\n\nThe doctor wrote a short note.\n"


class _Fake:
    def __init__(self, name, metric, skip=None, seconds=0.0):
        self.name, self.metric, self.skip, self.seconds, self.calls = name, metric, skip, seconds, 0

    def applies(self, state, opts):
        return self.skip

    def run(self, state, opts):
        import time

        self.calls += 1
        time.sleep(self.seconds)
        return {"did": self.name}


def test_run_passes_times_records_and_skips():
    from pathlib import Path

    from gptctl.export.passes import ExportState, run_passes
    from gptctl.progress import NULL_PROGRESS

    a, b = _Fake("a", "shared_s", seconds=0.02), _Fake("b", "shared_s", seconds=0.03)
    skipped = _Fake("c", "c_s", skip="not wanted")
    state = ExportState(work=Path("."), source=None, progress=NULL_PROGRESS)
    records = run_passes([a, skipped, b], state, opts=None)
    assert [r.name for r in records] == ["a", "c", "b"]
    assert skipped.calls == 0 and a.calls == b.calls == 1
    assert records[1].to_dict() == {"name": "c", "ran": False, "seconds": 0.0, "reason": "not wanted"}
    # Passes that share a metric add up (as the export's post-processing does under onnx_export_s).
    assert state.metrics["shared_s"] == pytest.approx(records[0].seconds + records[2].seconds, abs=2e-3)
    assert state.metrics["shared_s"] >= 0.05 and "c_s" not in state.metrics
    assert records[0].summary == {"did": "a"}


def test_manifest_lists_every_pass_in_order(tiny_llama, tmp_path):
    from gptctl.export import export_model
    from gptctl.export.passes import PASSES

    # optimum's layout: ORT's fusions run on it (the fast Llama graph skips them, fused already).
    opts = {"model": str(tiny_llama), "output": str(tmp_path / "o"), "optimize": True, "layout": "optimum"}
    manifest = export_model(opts)
    passes = manifest["passes"]
    assert [p["name"] for p in passes] == [p.name for p in PASSES]
    by_name = {p["name"]: p for p in passes}
    assert by_name["quantize"] == {"name": "quantize", "ran": False, "seconds": 0.0, "reason": "--quantize none"}
    assert by_name["optimize"]["ran"] and by_name["validate"]["ran"] and by_name["tie_lm_head"]["ran"]
    assert by_name["fold_prompt_prefix"]["reason"] == "not a prompt-tuning adapter"
    # One timing path, today's metric names.
    m = manifest["metrics"]
    for key in ("load_s", "onnx_export_s", "optimize_s", "shape_sharing_s", "save_s", "validation_s"):
        assert m[key] >= 0, key
    assert m["validation_s"] == by_name["validate"]["seconds"]
    assert "quantize_s" not in m and manifest["optimization"]["applied"] is True
    on_disk = json.loads((tmp_path / "o" / "gptctl.json").read_text())
    assert on_disk["passes"] == passes


def test_quantized_export_runs_the_quantize_passes_and_writes_a_model_card(tiny_llama, tmp_path):
    from gptctl.export import export_model

    eval_file = tmp_path / "eval.txt"
    eval_file.write_text(EVAL_TEXT)
    out = tmp_path / "o"
    manifest = export_model(
        {"model": str(tiny_llama), "output": str(out), "quantize": "int4", "eval_data": str(eval_file)}
    )
    by_name = {p["name"]: p for p in manifest["passes"]}
    assert by_name["quantize"]["ran"] and by_name["perplexity_quantized"]["ran"] and by_name["compare_converted"]["ran"]
    assert by_name["tie_lm_head"] == {
        "name": "tie_lm_head",
        "ran": False,
        "seconds": 0.0,
        "reason": "untied for quantization",
    }
    assert manifest["metrics"]["lm_head"] == "untied for quantization" and manifest["quantization"]["method"] == "int4"
    assert manifest["metrics"]["quantize_s"] == by_name["quantize"]["seconds"]
    card = (out / "README.md").read_text()
    assert "int4 MatMulNBits" in card and "block 32" in card and "com.microsoft" in card
    assert "ORTModelForCausalLM" in card and "onnxruntime" in card
    assert format(manifest["metrics"]["ppl_quantized"], ".4g") in card
    assert "README.md" not in manifest["outputs"]  # the hashed outputs are the graph files


def test_fp32_model_card_names_no_contrib_op(tiny_gpt2, tmp_path):
    from gptctl.export import export_model

    export_model({"model": str(tiny_gpt2), "output": str(tmp_path / "o")})
    card = (tmp_path / "o" / "README.md").read_text()
    assert "fp32 weights and activations" in card and "MatMulNBits" not in card and "passed" in card


@pytest.mark.parametrize("extra", [{}, {"quantize": "int4"}, {"optimize": True}], ids=["fp32", "int4", "optimize"])
def test_export_writes_nothing_outside_output(extra, tiny_llama, tmp_path, monkeypatch):
    from gptctl.export import export_model

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    export_model({"model": str(tiny_llama), "output": str(tmp_path / "o"), **extra})
    assert sorted(p.name for p in cwd.iterdir()) == []


def test_failed_shape_inference_leaves_no_scratch_file_in_cwd(tmp_path, monkeypatch):
    # ONNX Runtime saves sym_shape_infer_temp.onnx into the current directory when inference is incomplete.
    from onnx import TensorProto, helper

    from gptctl.export.shapes import share_shape_computations

    monkeypatch.chdir(tmp_path)
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.custom"), helper.make_node("Shape", ["y"], ["s"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("s", TensorProto.INT64, [1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)]
    )
    report = share_shape_computations(model)
    assert report["applied"] is False
    assert list(tmp_path.iterdir()) == []


def test_cli_quantize_choices_are_the_registry():
    import click
    import typer

    from gptctl.cli.app import app
    from gptctl.export.quant.registry import QUANT_CHOICES, QUANT_METHODS

    assert QUANT_CHOICES[0] == "none" and set(QUANT_CHOICES[1:]) == set(QUANT_METHODS)
    group = typer.main.get_command(app)
    command = group.get_command(click.Context(group), "export")
    param = next(p for p in command.params if p.name == "quantize")
    if isinstance(param.type, click.Choice):
        choices = tuple(param.type.choices)
    else:
        choices = tuple(param.metavar.strip("[]{}").split("|"))
    assert choices == QUANT_CHOICES
    for spec in QUANT_METHODS.values():
        assert spec.help in param.help.replace("\n", " ")


def test_every_registered_method_loads_and_options_accept_exactly_the_registry():
    from gptctl.errors import BadInput
    from gptctl.export.options import ExportOptions
    from gptctl.export.quant import QUANT_CHOICES, QUANT_METHODS, load_method
    from gptctl.export.quant.registry import REQUIRES_CALIBRATION
    from gptctl.options import parse_options

    for name in QUANT_METHODS:
        assert load_method(name).name == name
    for choice in QUANT_CHOICES:
        extra = (
            {"calibration_data": str(Path(__file__).parents[1] / "recipes/data/pharmacy-notes.txt")}
            if choice in REQUIRES_CALIBRATION
            else {}
        )
        opts = parse_options(ExportOptions, {"model": "m", "output": "o", "quantize": choice, **extra})
        assert opts.quantize == choice
    with pytest.raises(BadInput, match="quantize"):
        parse_options(ExportOptions, {"model": "m", "output": "o", "quantize": "int3"})
    with pytest.raises(KeyError, match="int4"):
        load_method("int3")


def test_registry_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys; import gptctl.export.quant.registry; "
        "bad = [m for m in ('numpy', 'onnx', 'onnxruntime', 'torch') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_embedding_quantizer_restores_the_logger_level():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from gptctl.export.quant.embedding import quantize_embedding

    table = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["y"])],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32])],
        [numpy_helper.from_array(table, "E")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    logger.setLevel(logging.INFO)
    try:
        out = quantize_embedding(model, 32, accuracy_level=4)
        assert logger.level == logging.INFO  # silenced only around the call
    finally:
        logger.setLevel(logging.NOTSET)
    assert any(n.op_type == "GatherBlockQuantized" for n in out.graph.node)


def test_optimize_and_export_share_one_reader_and_one_perplexity():
    import math

    from gptctl import evaluation
    from gptctl.optimize import data

    assert data.read_records is evaluation.read_records and data.tokenize is evaluation.tokenize
    assert evaluation.perplexity_from_nll(math.log(7.5)) == pytest.approx(7.5)
    assert evaluation.perplexity_from_nll(1e9) == math.exp(700.0)  # capped, not an overflow
