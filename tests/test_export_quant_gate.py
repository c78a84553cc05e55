"""The gate on the shipped quantized graph: compared with the validated fp32 graph, thresholds fail the export."""

import pytest

from gptctl.errors import CheckFailed

EVAL_TEXT = (
    "The patient was given aspirin for the headache and rested at home. "
    "A nurse measured the blood pressure twice before the visit ended. "
) * 3


def _figures(top1=0.9, prefix=0.5):
    return {
        "logits_max_abs_diff": 1.0,
        "top1_agreement": top1,
        "greedy_agreement": prefix,
        "greedy_prefix_agreement": prefix,
        "greedy_tokens": 8,
        "positions": 24,
    }


def test_check_converted_passes_and_fails_on_each_threshold():
    from gptctl.export.validate import check_converted

    ok = check_converted(
        _figures(), min_top1=0.8, min_greedy_prefix=0.25, max_ppl_ratio=1.1, ppl_ratio=1.05, what="int4"
    )
    assert ok["passed"] is True and ok["thresholds"]["max_ppl_ratio"] == 1.1
    for figures, ratio, word in (
        (_figures(top1=0.7), 1.0, "top-1"),
        (_figures(prefix=0.125), 1.0, "greedy prefix"),
        (_figures(), 1.2, "perplexity ratio"),
    ):
        with pytest.raises(CheckFailed, match=word) as err:
            check_converted(
                figures, min_top1=0.8, min_greedy_prefix=0.25, max_ppl_ratio=1.1, ppl_ratio=ratio, what="int4"
            )
        assert err.value.exit_code == 1


class _Damaged:
    """int4, then every MatMulNBits scale scrambled: a shipped graph that really differs from the fp32 one."""

    name = "int4"
    uses_calibration = True

    def quantize(self, proto, opts, calibration=None):
        import numpy as np
        from onnx import numpy_helper

        from gptctl.export.quant.planned import INT4

        proto, report = INT4.quantize(proto, opts, calibration=calibration)
        rng = np.random.default_rng(0)
        for t in proto.graph.initializer:
            if t.name.endswith("_scales"):
                a = numpy_helper.to_array(t)
                t.CopyFrom(numpy_helper.from_array((a * rng.uniform(-3, 3, a.shape)).astype(a.dtype), t.name))
        return proto, report


def test_export_gate_passes_then_fails_on_a_graph_that_differs(tiny_llama, tmp_path, monkeypatch):
    import gptctl.export.quant as quant
    from gptctl.export import export_model

    eval_file = tmp_path / "eval.txt"
    eval_file.write_text(EVAL_TEXT)
    common = {"model": str(tiny_llama), "quantize": "int4", "eval_data": str(eval_file)}
    manifest = export_model({**common, "output": str(tmp_path / "ok")})  # the default thresholds
    gate = manifest["validation"]["converted_vs_fp32"]
    assert manifest["validation"]["passed"] is True and gate["passed"] is True
    assert (
        gate["ppl_ratio"] == manifest["metrics"]["ppl_ratio"]
        and "shipped int4" in manifest["validation"]["checked_graph"]
    )
    monkeypatch.setattr(quant, "load_method", lambda name: _Damaged())
    with pytest.raises(CheckFailed, match="differs too much") as err:
        export_model({**common, "output": str(tmp_path / "bad")})
    assert err.value.exit_code == 1 and any("top1_agreement" in d for d in err.value.details)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    # The same graph passes when the thresholds allow it: the gate, not the export, failed above.
    loose = {"min_top1_agreement": 0, "min_greedy_prefix": 0, "max_ppl_ratio": 1e9}
    assert export_model({**common, "output": str(tmp_path / "loose"), **loose})["validation"]["passed"] is True
