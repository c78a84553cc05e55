"""Benchmarks on a tiny artifact: per-provider entries, the PyTorch baseline and ratios, `gptctl bench`."""

import json

import pytest
from typer.testing import CliRunner

from gptctl.cli.app import app

SMALL = ["--threads", "1", "--iterations", "2", "--warmup", "1", "--decode-tokens", "4", "--prompt-lengths", "8"]


@pytest.fixture(scope="module")
def artifact(tiny_gpt2, tmp_path_factory):
    from gptctl.export import export_model

    out = tmp_path_factory.mktemp("bench") / "onnx"
    export_model({"model": str(tiny_gpt2), "output": str(out)})
    return out


def test_bench_cli_measures_cpu_and_reports_cuda_unavailable(artifact):
    res = CliRunner().invoke(app, ["bench", str(artifact), "--provider", "cpu,cuda", "--json", *SMALL])
    assert res.exit_code == 0, res.output
    bench = json.loads(res.stdout)["benchmark"]
    cpu, cuda, pt = bench["cpu"], bench["cuda"], bench["pytorch"]
    assert cpu["available"] and cpu["active_providers"][0] == "CPUExecutionProvider"
    for key in ("session_s", "decode_tokens_per_s", "peak_rss_mb", "size_mb", "decode_speedup_vs_pytorch"):
        assert cpu[key] > 0, key
    cell = cpu["prefill_ms"]["b1_s8"]
    assert cell["n"] == 2 and cell["p50"] <= cell["p99"]
    assert cpu["prefill_ms"]["iterations"] == 2 and cpu["prefill_ms"]["warmup"] == 1
    assert pt["available"] and pt["decode_tokens_per_s"] > 0
    assert cpu["decode_speedup_vs_pytorch"] == pytest.approx(
        cpu["decode_tokens_per_s"] / pt["decode_tokens_per_s"], rel=1e-2
    )
    if not cuda["available"]:  # no GPU here: reported, never measured on CPU under its name
        assert cuda["reason"] and "decode_tokens_per_s" not in cuda


def test_bench_require_provider_exits_1(artifact):
    from gptctl.runtime.providers import probe_providers

    if probe_providers(["cuda"])["cuda"]["available"]:
        pytest.skip("a GPU is present")
    res = CliRunner().invoke(app, ["bench", str(artifact), "--require-provider", "cuda", "--no-baseline", *SMALL])
    assert res.exit_code == 1
    assert "cuda" in res.stderr and "Traceback" not in res.output


def test_bench_bad_dir_exits_2(tmp_path):
    res = CliRunner().invoke(app, ["bench", str(tmp_path)])
    assert res.exit_code == 2 and "model.onnx" in res.stderr
