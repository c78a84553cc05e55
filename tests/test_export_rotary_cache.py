"""`--optimize` does not make an export larger by tables for positions the model never sees: ORT's
RotaryEmbedding fusion writes cos/sin caches for 131,072 positions whatever the model, which made the
SmolLM2-135M int4 export 148.4 MB instead of 115.2 MB; gptctl cuts them to max_position_embeddings."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from gptctl.export import ExportOptions, export_model
from gptctl.export.optimize_graph import trim_rotary_caches

# ORT's fusions run on optimum's graph (gptctl's own fast Llama graph is fused already and sizes its tables).
OPTIMUM = {"layout": "optimum"} if "layout" in ExportOptions.model_fields else {}


def _initializers(path):
    return {i.name: i for i in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("extra", [{}, {"quantize": "int4"}], ids=["fp32", "int4"])
def test_optimized_llama_keeps_rotary_tables_to_its_context(tiny_model_factory, tmp_path, extra):
    model = tiny_model_factory("llama")  # max_position_embeddings 128
    manifest = export_model(
        {"model": str(model), "output": str(tmp_path / "opt"), "optimize": True, **OPTIMUM, **extra}
    )
    assert "RotaryEmbedding" in manifest["optimization"]["fused"]
    assert manifest["optimization"]["rotary_cache_rows"] == {"cos_cache": [131072, 128], "sin_cache": [131072, 128]}
    inits = _initializers(tmp_path / "opt" / "model.onnx")
    assert [list(inits[n].dims) for n in ("cos_cache", "sin_cache")] == [[128, 8], [128, 8]]  # head_dim 16 / 2
    assert manifest["validation"]["passed"] and manifest["validation"]["greedy_match"]


def test_optimize_costs_no_more_than_a_few_percent_of_size(tiny_model_factory, tmp_path):
    model = str(tiny_model_factory("llama"))
    plain = export_model({"model": model, "output": str(tmp_path / "plain"), "quantize": "int4", **OPTIMUM})
    fused = export_model(
        {"model": model, "output": str(tmp_path / "fused"), "quantize": "int4", "optimize": True, **OPTIMUM}
    )
    # Untrimmed, the two tables alone (2 x 131072 x 8 fp32 = 8.4 MB) were many times this tiny model.
    assert fused["metrics"]["size_bytes"] <= 1.05 * plain["metrics"]["size_bytes"]


def test_trim_keeps_the_first_rows_exactly_and_leaves_short_tables_alone():
    table = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    graph = onnx.helper.make_graph(
        [],
        "g",
        [],
        [],
        initializer=[numpy_helper.from_array(table, "cos_cache"), numpy_helper.from_array(table[:50], "sin_cache")],
    )
    proto = onnx.helper.make_model(graph)
    assert trim_rotary_caches(proto, 100) == {"rotary_cache_rows": {"cos_cache": [300, 100]}}
    got = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert np.array_equal(got["cos_cache"], table[:100]) and np.array_equal(got["sin_cache"], table[:50])
