"""Killing and interrupting real runs of `python -m gptctl run` on a tiny model (seconds each).

SIGKILL during the export step (and during its quantization) leaves nothing that looks finished and
the next run succeeds; Ctrl-C during LoRA keeps a checkpoint that a plain rerun resumes from, to the
same result as a run never interrupted. Every wait is bounded.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptctl.cli.app import app

PICK = """\
  pick:
    kind: select
    options: {{max_params: 200m, license: [apache-2.0], instruct: true, exportable: true}}
    sources:
      HuggingFaceTB/SmolLM2-135M-Instruct: {model}
"""

EXPORT = (
    "name: tinyship\nsteps:\n"
    + PICK
    + """\
  ship:
    kind: export
    options: {{quantize: int4, eval_data: "{notes}", benchmark: false, greedy_tokens: 4}}
gates:
  - steps.ship.validation.passed
"""
)

TUNE = (
    "name: tinytune\nsteps:\n"
    + PICK
    + """\
  tune:
    kind: optimize
    method: lora
    options: {{model: "${{steps.pick.model}}", data: "{notes}", eval_data: "{notes}", max_length: 32,
               batch_size: 2, max_steps: {steps}, checkpoint_every: 1, dropout: 0.0, lr: 5.0e-3, rank: 4, seed: 0}}
gates:
  - steps.tune.metrics.ppl_after < steps.tune.metrics.ppl_before
"""
)


def _notes(tmp_path: Path) -> Path:
    notes = tmp_path / "notes.txt"
    notes.write_text("\n\n".join(["Take one tablet in the morning with water."] * 12))
    return notes


def _start(recipe: Path, cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "gptctl", "run", str(recipe), "--workdir", "w", "--no-progress", "--json"]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=log.open("w"))


def _wait_until(ready, proc: subprocess.Popen, log: Path, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}:\n{log.read_text()}"
        assert time.time() < deadline, f"no {what} after {timeout}s:\n{log.read_text()}"
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def cli(recipe: Path, workdir: Path, *args):
    return CliRunner().invoke(app, ["run", str(recipe), "--workdir", str(workdir), "--no-progress", "--json", *args])


def test_sigkill_during_export_and_its_quantization_leaves_nothing_finished(tmp_path, tiny_llama):
    recipe = tmp_path / "tinyship.yaml"
    recipe.write_text(EXPORT.format(model=tiny_llama, notes=_notes(tmp_path)))
    w = tmp_path / "w"

    # 1. Killed as soon as the export writes anything.
    log = tmp_path / "first.log"
    proc = _start(recipe, tmp_path, log)
    _wait_until(lambda: list(w.glob(".ship.partial-*")), proc, log, "export work folder")
    _kill(proc)
    first_leftovers = set(w.glob(".ship.partial-*"))
    assert first_leftovers and not (w / "ship").exists()
    assert not (w / ".gptctl-run" / "ship.json").exists()  # no cache record: not taken as done
    assert (w / "pick" / "gptctl.json").is_file()

    # 2. Killed while it quantizes (the message comes right before the int4 pass).
    log = tmp_path / "second.log"
    proc = _start(recipe, tmp_path, log)
    _wait_until(lambda: "quantiz" in log.read_text().lower(), proc, log, "quantization")
    _kill(proc)
    assert not (w / "ship").exists()
    leftovers = set(w.glob(".ship.partial-*"))
    assert leftovers and not leftovers & first_leftovers  # the second run removed the first one's
    assert "interrupted last time" in log.read_text()

    # 3. The rerun succeeds and cleans up after both.
    result = cli(recipe, w)
    assert result.exit_code == 0, result.stderr + result.stdout
    data = json.loads(result.stdout)
    assert [s["status"] for s in data["steps"]] == ["cached", "ran"]
    assert (w / "ship" / "model.onnx").is_file() and (w / "ship" / "gptctl.json").is_file()
    assert not list(w.glob(".ship.*")), list(w.glob(".ship.*"))


def test_ctrl_c_during_lora_then_a_plain_rerun_resumes_to_the_same_result(tmp_path, tiny_llama):
    steps = 60  # a tiny step takes tens of ms (a checkpoint each): Ctrl-C lands mid-training
    recipe = tmp_path / "tinytune.yaml"
    recipe.write_text(TUNE.format(model=tiny_llama, notes=_notes(tmp_path), steps=steps))
    w = tmp_path / "w"
    ckpt = w / ".tune.work" / "checkpoints" / "last.pt"

    log = tmp_path / "first.log"
    proc = _start(recipe, tmp_path, log)
    _wait_until(ckpt.is_file, proc, log, "first checkpoint")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    stderr = log.read_text()
    assert proc.returncode == 130, stderr
    # rich wraps the message at the terminal width the subprocess sees: compare words, not line breaks
    # (after a step the checkpoint is saved then; inside one, the last whole one is kept)
    assert "run again with --resume to continue" in " ".join(stderr.split())
    interrupted = json.loads(out)
    assert interrupted["error"] == "interrupted during step tune"
    assert "resumes from its checkpoint" in interrupted["hint"]
    assert [s["status"] for s in interrupted["steps"]] == ["ran", "interrupted"]
    assert not (w / "tune").exists() and ckpt.is_file()

    plan = cli(recipe, w, "--dry-run")
    assert "resuming from its checkpoint" in json.loads(plan.stdout)["steps"][1]["reason"]

    resumed = cli(recipe, w)  # a plain rerun: --resume is the default
    assert resumed.exit_code == 0, resumed.stderr + resumed.stdout
    tune = json.loads(resumed.stdout)["steps"][1]
    assert tune["status"] == "ran" and "resuming from its checkpoint" in tune["reason"]
    start = tune["metrics"]["resumed_from_step"]
    assert start is not None and 1 <= start < steps
    assert not (w / ".tune.work").exists()

    straight = json.loads(cli(recipe, tmp_path / "straight").stdout)["steps"][1]["metrics"]
    assert straight["resumed_from_step"] is None
    # As in test_optimize_methods.test_resume_continues_from_the_saved_step: the same training.
    assert tune["metrics"]["loss_last"] == pytest.approx(straight["loss_last"], abs=1e-4)
    assert tune["metrics"]["ppl_after"] == pytest.approx(straight["ppl_after"], rel=1e-4)


def test_no_resume_starts_an_interrupted_step_over(tmp_path, tiny_llama):
    recipe = tmp_path / "tinytune.yaml"
    recipe.write_text(TUNE.format(model=tiny_llama, notes=_notes(tmp_path), steps=60))
    w = tmp_path / "w"
    log = tmp_path / "first.log"
    proc = _start(recipe, tmp_path, log)
    _wait_until((w / ".tune.work" / "checkpoints" / "last.pt").is_file, proc, log, "first checkpoint")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130, log.read_text()

    again = cli(recipe, w, "--no-resume", "--set", "steps.tune.options.max_steps=2")
    assert again.exit_code == 0, again.stderr + again.stdout
    tune = json.loads(again.stdout)["steps"][1]
    assert tune["metrics"]["resumed_from_step"] is None
    assert "starting over" in tune["reason"]
