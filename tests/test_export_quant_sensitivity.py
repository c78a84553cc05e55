"""Mixed precision on both layouts: int4-auto's measured 8-bit set (gptctl/export/quant/sensitivity.py) and
int4-mixed's Q4_K_M rule, with the fast graph's fused q|k|v at one precision."""

import numpy as np
import onnx
import pytest

from gptctl.export import export_model

CALIBRATION_TEXT = (
    "The pharmacist counted the tablets twice and wrote the dose on the label. "
    "A nurse checked the allergy list before the first dose was given. "
) * 4
LENIENT = {"min_top1_agreement": 0, "min_greedy_prefix": 0, "max_ppl_ratio": 100}


def _export(model, tmp_path, method, layout="fast", **extra):
    cal = tmp_path / "cal.txt"
    cal.write_text(CALIBRATION_TEXT)
    out = tmp_path / f"{method}-{layout}"
    opts = {"model": str(model), "output": str(out), "quantize": method, "layout": layout, **extra}
    if method != "none":
        opts.update({"calibration_data": str(cal), **LENIENT})
    manifest = export_model(opts)
    return out, manifest


def _nbits_by_kind(out):
    """(layer, kind) -> bits of every MatMulNBits in the shipped graph, from its node names."""
    from gptctl.export.quant.rewrite import _KIND, _LAYER

    found = {}
    for node in onnx.load(str(out / "model.onnx")).graph.node:
        if node.op_type != "MatMulNBits" or not node.name.endswith("_Q"):
            continue
        layer, kind = _LAYER.search(node.name), _KIND.search(node.name[:-2])
        if layer and kind:
            bits = next(a.i for a in node.attribute if a.name == "bits")
            found.setdefault((int(layer.group(1)), kind.group(1)), []).append(bits)
    return found


def test_choose_8bit_ranks_kl_per_parameter_within_the_budget():
    from gptctl.export.quant.sensitivity import choose_8bit

    kl = {"a": 0.9, "b": 0.5, "c": 0.2, "d": 0.0}
    params = {"a": 900, "b": 100, "c": 100, "d": 100}  # KL per parameter: b, c, a, d
    assert choose_8bit(kl, params, 0.2) == ["b", "c"]  # a (0.75 of the parameters) does not fit
    assert choose_8bit(kl, params, 1.0) == ["b", "c", "a"]  # d loses nothing at 4 bits: never promoted
    assert choose_8bit(kl, params, 0.0) == []


def test_measured_kl_is_zero_for_an_unchanged_weight_and_grows_with_the_error(tiny_llama, tmp_path):
    from gptctl.evaluation.records import Sample
    from gptctl.export.onnx_export import MODEL_FILE
    from gptctl.export.quant.sensitivity import measure_sensitivity

    out, _ = _export(tiny_llama, tmp_path, "none")
    proto = onnx.load(str(out / MODEL_FILE))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    name = next(n for n in inits if "down_proj" in n)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(inits[name].shape).astype(np.float32) * float(np.abs(inits[name]).mean())
    trial = {
        "same": lambda: inits[name],
        "small": lambda: inits[name] + 0.1 * noise,
        "big": lambda: inits[name] + noise,
    }
    ids = list(rng.integers(0, 100, 40))
    samples = [Sample(input_ids=ids, labels=ids, line=0)]
    kl = measure_sensitivity(proto, {f"{name}": trial["same"]}, samples).kl[name]
    assert kl == pytest.approx(0.0, abs=1e-6)
    small = measure_sensitivity(proto, {name: trial["small"]}, samples).kl[name]
    big = measure_sensitivity(proto, {name: trial["big"]}, samples).kl[name]
    assert 0 < small < big
    assert len(proto.graph.input) == len(onnx.load(str(out / MODEL_FILE)).graph.input)  # graph left as it was


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_int4_auto_keeps_the_budget_and_records_its_choice(tiny_llama, tmp_path, share):
    out, manifest = _export(tiny_llama, tmp_path, "int4-auto", int8_share=share)
    q = manifest["quantization"]
    sens = q["sensitivity"]
    assert sens["int8_share"] == share and sens["tokens"] > 10
    assert sens["params_8bit_share"] <= share
    weights = {w: c for w, c in q["weights"].items() if c["layer"] is not None}
    eight = sorted(f"{c['kind']}@{c['layer']}" for c in weights.values() if c["bits"] == 8)
    assert eight == sorted(q["mixed_8bit_weights"])
    assert set(sens["kl_4bit"]) == {f"{c['kind']}@{c['layer']}" for c in weights.values()}
    assert all(v >= 0 for v in sens["kl_4bit"].values())
    if share == 0.0:
        assert eight == []
    if share == 1.0:  # everything with a measurable loss fits
        assert eight == sorted(k for k, v in sens["kl_4bit"].items() if v > 0) and eight
    # The fast graph: one q|k|v MatMulNBits per layer, so q, k and v share one precision.
    found = _nbits_by_kind(out)
    assert all(len(found[(layer, "qkv_proj")]) == 1 for layer in (0, 1))
    assert not any(kind in ("q_proj", "k_proj", "v_proj") for _, kind in found)
    for (layer, kind), bits in found.items():
        assert bits == [8 if f"{kind}@{layer}" in eight else 4]


@pytest.mark.parametrize("layout", ["fast", "optimum"])
def test_int4_mixed_promotes_q4km_tensors_on_both_layouts(tiny_llama, tmp_path, layout):
    from gptctl.export.quant.mixed import use_more_bits

    out, manifest = _export(tiny_llama, tmp_path, "int4-mixed", layout=layout)
    assert manifest["metrics"]["layout"] == layout
    found = _nbits_by_kind(out)
    attn_v = "qkv_proj" if layout == "fast" else "v_proj"
    for layer in (0, 1):
        more = use_more_bits(layer, 2)
        assert found[(layer, attn_v)] == [8 if more else 4]
        assert found[(layer, "down_proj")] == [8 if more else 4]
        if layout == "optimum":  # q and k stay at 4 bits beside an 8-bit v
            assert found[(layer, "q_proj")] == found[(layer, "k_proj")] == [4]
    assert sorted(manifest["quantization"]["mixed_8bit_weights"]) == sorted(
        f"{k}@{layer}" for layer in (0, 1) if use_more_bits(layer, 2) for k in (attn_v, "down_proj")
    )


def test_bench_peers_quality_only_reports_cost_kl_and_share_of_q4km():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_peers.py"
    spec = importlib.util.spec_from_file_location("bench_peers", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--quality-only", "--gptctl-methods", "int4-auto:--int8-share 0.2"])
    assert args.quality_only and args.gptctl_methods.partition(":")[2].split() == ["--int8-share", "0.2"]
    results = {
        "llama.cpp f32": {"runs": [], "bytes": 400, "ppl": 10.0},
        "llama.cpp Q4_K_M": {"runs": [], "bytes": 100, "ppl": 12.0, "kl": 0.08, "top1": 0.8},
        "gptctl fp32": {"runs": [], "bytes": 400, "ppl": 10.0},
        "gptctl int4-auto": {"runs": [], "bytes": 99, "ppl": 10.5, "kl": 0.04, "top1": 0.9},
    }
    lines = bench.report(results)
    row = next(line for line in lines if line.startswith("gptctl int4-auto")).split()
    assert row[-6:-1] == ["0.99", "10.500", "+5.0%", "0.0400", "0.900"]
    assert row[-1] == "0.25"  # its 5% cost is a quarter of Q4_K_M's 20%
