"""Ctrl-C during `gptctl tune` stops after the running trial and keeps everything; --resume continues the
same study. A real process and a real SIGINT (the stand-in steps of tests/recipe_fakes.py, each trial
~0.3 s)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

FAKES = Path(__file__).resolve().parent / "recipe_fakes.py"

RECIPE = """\
name: slow
steps:
  pick:
    kind: select
    options: {max_params: 200m}
  prune:
    kind: optimize
    method: prune
    options: {model: "${steps.pick.model}", ratio: 0.3, sleep: 0.3}
  ship:
    kind: export
    options: {quantize: int4}
gates:
  - steps.prune.metrics.sparsity_realised >= 0.2
search:
  space:
    prune.options.seed: {int: [0, 100000]}
  objectives: {ppl: min}
"""


def tune(tmp_path, *args, **kw):
    cmd = [sys.executable, str(FAKES), "tune", str(tmp_path / "slow.yaml"), "--output", str(tmp_path / "s"), *args]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def trials(tmp_path):
    log = tmp_path / "s" / "trials.jsonl"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_ctrl_c_stops_after_the_running_trial_then_resume_continues(tmp_path):
    (tmp_path / "slow.yaml").write_text(RECIPE)
    proc = tune(tmp_path, "--trials", "50", env={**os.environ, "PYTHONPATH": str(FAKES.parent)})
    deadline = time.monotonic() + 60
    while len(trials(tmp_path)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert len(trials(tmp_path)) >= 2, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopping after the running trial" in err
    done = trials(tmp_path)
    assert 2 <= len(done) < 50
    assert all(t["state"] == "complete" for t in done)  # the running trial finished; none was cut short
    assert "Pareto front" in out  # the front so far
    front = json.loads((tmp_path / "s" / "front.json").read_text())
    assert front["trials"] == len(done) and front["front"]

    n = len(done)
    again = tune(tmp_path, "--trials", str(n + 2), "--resume", "--json", env={**os.environ})
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    after = trials(tmp_path)
    assert [t["number"] for t in after] == list(range(n + 2))  # the same study, numbering continued
    assert sum(t["baseline"] for t in after) == 1  # the recipe as written was enqueued once
    assert len(json.loads(out)["trials"]) == n + 2
