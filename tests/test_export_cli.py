"""`gptctl export` on the command line: exit codes, one-sentence errors, --json."""

import json

import pytest
from typer.testing import CliRunner

from gptctl.cli.app import app


@pytest.fixture()
def runner():
    return CliRunner()


def test_export_json_prints_manifest(runner, tiny_llama, tmp_path):
    out = tmp_path / "onnx"
    res = runner.invoke(app, ["export", "--model", str(tiny_llama), "--output", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["validation"]["passed"] is True
    assert data["metrics"]["size_bytes"] > 0
    assert json.loads((out / "gptctl.json").read_text())["validation"] == data["validation"]


def test_export_table_output(runner, tiny_gpt2, tmp_path):
    res = runner.invoke(app, ["export", "-m", str(tiny_gpt2), "-o", str(tmp_path / "onnx")])
    assert res.exit_code == 0, res.output
    assert (
        "present values" in res.stdout and "identical" in res.stdout
    )  # a row per kind (tests/test_cli_narrow_output.py)


def test_tiny_atol_exits_1_with_figures(runner, tiny_gpt2, tmp_path):
    res = runner.invoke(app, ["export", "-m", str(tiny_gpt2), "-o", str(tmp_path / "onnx"), "--atol", "1e-12"])
    assert res.exit_code == 1
    assert "validation failed" in res.stderr and "max |diff|" in res.stderr
    assert "Traceback" not in res.output
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "/nonexistent/model"], "not found"),
        (["--quantize", "int3"], "quantize"),
        (["--block-size", "48"], "power of two"),
        (["--provider", "rocm"], "provider"),
        (["--eval-data", "/nonexistent.txt", "--quantize", "int4"], "no such file"),
    ],
)
def test_bad_input_exits_2_without_traceback(runner, tiny_gpt2, tmp_path, args, words):
    base = ["export", "--output", str(tmp_path / "onnx")]
    if "--model" not in args:
        base += ["--model", str(tiny_gpt2)]
    res = runner.invoke(app, base + args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and words in res.stderr
    assert not (tmp_path / "onnx").exists()


def test_require_unavailable_provider_exits_1_before_exporting(runner, tiny_gpt2, tmp_path):
    res = runner.invoke(
        app, ["export", "-m", str(tiny_gpt2), "-o", str(tmp_path / "onnx"), "--require-provider", "cuda"]
    )
    assert res.exit_code == 1
    assert "required execution provider not active: cuda" in res.stderr
    assert "CUDAExecutionProvider" in res.stderr  # the reason ORT gave
    assert not (tmp_path / "onnx").exists()


def test_help_does_not_import_heavy_libraries():
    import subprocess
    import sys

    code = (
        "import sys; from typer.testing import CliRunner; from gptctl.cli.app import app; "
        "r = CliRunner().invoke(app, ['export', '--help']); assert r.exit_code == 0, r.output; "
        "r = CliRunner().invoke(app, ['bench', '--help']); assert r.exit_code == 0, r.output; "
        "import gptctl.export, gptctl.bench; "
        "bad = [m for m in ('torch', 'transformers', 'onnxruntime', 'optimum', 'peft', 'onnx') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
