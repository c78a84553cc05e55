"""`gptctl optimize ...` from the command line: manifests on stdout, one sentence and exit 2 on bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from gptctl.cli.app import app

from tiny_models import CORPUS


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "train.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in CORPUS) + "\n")
    (d / "bad.jsonl").write_text('{"text": "ok"}\n' * 16 + '{"text": oops}\n')
    (d / "nofield.jsonl").write_text('{"text": "ok"}\n{"body": "x"}\n')
    (d / "empty.jsonl").write_text("\n")
    (d / "long.jsonl").write_text(json.dumps({"text": "word " * 200}) + "\n")
    (d / "notes.csv").write_text("a,b\n")
    (d / "full").mkdir()
    (d / "full" / "x").write_text("x")
    return {"dir": d, "model": str(tiny_model_factory("gpt2"))}


def _run(*args):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_json_prints_the_manifest(files, tmp_path):
    out = tmp_path / "o"
    code, stdout, stderr = _run(
        "optimize",
        "lora",
        "--model",
        files["model"],
        "--data",
        str(files["dir"] / "train.jsonl"),
        "--eval-split",
        "0.2",
        "--max-steps",
        "2",
        "--output",
        str(out),
        "--json",
    )
    assert code == 0, stderr
    manifest = json.loads(stdout)
    assert manifest == json.loads((out / "gptctl.json").read_text())
    assert manifest["method"] == "lora" and manifest["metrics"]["ppl_before"] > 0


def test_summary_table(files, tmp_path):
    code, stdout, stderr = _run(
        "optimize",
        "prune",
        "--model",
        files["model"],
        "--ratio",
        "0.4",
        "--eval-data",
        str(files["dir"] / "train.jsonl"),
        "--output",
        str(tmp_path / "p"),
    )
    assert code == 0, stderr
    assert "perplexity" in stdout and "realised 0.4" in stdout


BAD = {
    "missing data file": (["lora", "--data", "{d}/nope.jsonl"], "no such file"),
    "bad json": (["lora", "--data", "{d}/bad.jsonl"], "bad.jsonl:17: not valid JSON"),
    "missing field": (["lora", "--data", "{d}/nofield.jsonl"], "nofield.jsonl:2: missing field"),
    "empty file": (["lora", "--data", "{d}/empty.jsonl"], "is empty"),
    "unsupported file": (["lora", "--data", "{d}/notes.csv"], "unsupported file type"),
    "all too long": (["lora", "--data", "{d}/long.jsonl", "--max-length", "16"], "every sample is longer"),
    "bad eval data": (["prune", "--ratio", "0.3", "--eval-data", "{d}/bad.jsonl"], "bad.jsonl:17"),
    "ratio out of range": (["prune", "--ratio", "1.5"], "ratio"),
    "bad structure": (["prune", "--structure", "3:2"], "N:M"),
    "wanda without data": (["prune", "--ratio", "0.5", "--method", "wanda"], "calibrates on --data"),
    "unknown target": (["lora", "--data", "{d}/train.jsonl", "--target-modules", "q_proj"], "no such Linear module"),
    "fp16 on cpu": (["lora", "--data", "{d}/train.jsonl", "--precision", "fp16"], "fp16 needs a CUDA GPU"),
    "output not empty": (["prune", "--ratio", "0.3", "--output", "{d}/full"], "is not empty"),
    "model missing": (["prune", "--ratio", "0.3", "--model", "{d}/no-model"], "not found"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_sentence(case, files, tmp_path):
    args, expected = BAD[case]
    args = [a.format(d=files["dir"]) for a in args]
    if "--model" not in args:
        args += ["--model", files["model"]]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "out")]
    code, stdout, stderr = (
        _run("optimize", *args, "--max-steps", "1") if args[0] != "prune" else _run("optimize", *args)
    )
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert expected in " ".join(stderr.split()), stderr
    assert not (tmp_path / "out").exists()


def test_help_does_not_import_torch():
    code = (
        "import sys, runpy; sys.argv = ['gptctl', 'optimize', 'lora', '--help']\n"
        "try:\n    runpy.run_module('gptctl', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\nprint('OK')"
    )
    env = {**os.environ, "COLUMNS": "100"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr
    assert "--num-virtual-tokens" not in out.stdout and "--rank" in out.stdout


@pytest.mark.skipif(
    shutil.which("accelerate") is None
    and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "accelerate")),
    reason="accelerate CLI not installed",
)
def test_accelerate_two_processes_on_cpu(files, tmp_path):
    """`accelerate launch --num_processes 2` runs one data-parallel job over gloo; both ranks train."""
    launcher = shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_DISABLE_RICH": "1"}
    cmd = [
        launcher,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        "-m",
        "gptctl",
        "optimize",
        "lora",
        "--model",
        files["model"],
        "--data",
        str(files["dir"] / "train.jsonl"),
        "--eval-split",
        "0.2",
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--output",
        str(out),
        "--json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads(done.stdout)  # only rank 0 prints
    m = manifest["metrics"]
    assert m["world_size"] == 2 and m["global_batch_size"] == 4
    assert len(m["train_tokens_per_rank"]) == 2 and all(t > 0 for t in m["train_tokens_per_rank"])
    assert m["ranks_in_sync"] is True
    assert json.loads((out / "gptctl.json").read_text())["metrics"]["world_size"] == 2
