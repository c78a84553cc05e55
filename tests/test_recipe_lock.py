"""One run per workdir: a second `gptctl run` waits or exits 2; a killed run's lock and leftovers are stale.

Real processes (the CLI with the stand-in steps of recipe_fakes), every wait bounded.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_recipe_run import RECIPE

import recipe_fakes

SLOW = ["--set", "steps.tune.options.sleep=60"]


@pytest.fixture
def demo(tmp_path):
    (tmp_path / "notes.txt").write_text("Take one tablet twice a day with food.\n")
    (tmp_path / "demo.yaml").write_text(RECIPE)
    return tmp_path


def _cmd(demo, *args):
    return [sys.executable, recipe_fakes.__file__, "run", str(demo / "demo.yaml"), "--no-progress", "--json", *args]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(recipe_fakes.__file__).parent), *sys.path])}


def _start(demo, *args):
    return subprocess.Popen(_cmd(demo, *args), env=_env(), cwd=demo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(demo, *args, timeout=60):
    return subprocess.run(_cmd(demo, *args), env=_env(), cwd=demo, capture_output=True, text=True, timeout=timeout)


def _wait_for(pattern_dir: Path, pattern: str, proc, timeout=60):
    deadline = time.time() + timeout
    while not list(pattern_dir.glob(pattern)):
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        assert time.time() < deadline, f"no {pattern} in {pattern_dir} after {timeout}s"
        time.sleep(0.05)


def _statuses(stdout):
    return {s["name"]: s["status"] for s in json.loads(stdout)["steps"]}


def test_a_second_run_of_a_busy_workdir_exits_2_naming_the_first(demo):
    first = _start(demo, *SLOW)
    workdir = demo / "runs" / "demo"
    try:
        _wait_for(workdir, ".tune.partial-*/half-written.bin", first)
        second = _run(demo, *SLOW)
        assert second.returncode == 2, second.stderr
        assert f"workdir runs/demo is in use by run PID {first.pid} since " in second.stderr
        assert "--wait" in second.stderr  # the hint says how to queue instead
        assert json.loads(second.stdout)["exit_code"] == 2  # --json: one error object on stdout
        # The second run touched nothing: the first one's step in progress is still its own.
        assert len(list(workdir.glob(".tune.partial-*"))) == 1
        assert not (workdir / "summaries").exists()
    finally:
        first.kill()
        first.wait(timeout=30)


def test_wait_queues_behind_the_running_one_and_then_reuses_its_results(demo):
    slow = ["--set", "steps.tune.options.sleep=2"]
    first = _start(demo, *slow)
    _wait_for(demo / "runs" / "demo", ".tune.partial-*/half-written.bin", first)
    second = _run(demo, *slow, "--wait", "60")
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err.decode()
    assert _statuses(out) == dict.fromkeys(("pick", "tune", "prune", "ship"), "ran")
    assert second.returncode == 0, second.stderr
    # It ran after the first one had finished: every step cached, none raced or "interrupted".
    assert set(_statuses(second.stdout).values()) == {"cached"}
    assert "interrupted" not in second.stderr


def test_wait_gives_up_after_its_seconds(demo):
    first = _start(demo, *SLOW)
    try:
        _wait_for(demo / "runs" / "demo", ".tune.partial-*/half-written.bin", first)
        t = time.time()
        second = _run(demo, *SLOW, "--wait", "1")
        assert second.returncode == 2 and "(waited 1s)" in second.stderr
        assert 1 <= time.time() - t < 30
    finally:
        first.kill()
        first.wait(timeout=30)


def test_a_killed_runs_lock_is_stale_and_its_work_folders_are_cleaned(demo):
    first = _start(demo, *SLOW)
    workdir = demo / "runs" / "demo"
    _wait_for(workdir, ".tune.partial-*/half-written.bin", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    lock = json.loads((workdir / ".gptctl-run" / "lock").read_text())
    assert lock["pid"] == first.pid  # the record stays, but the kernel released the flock
    assert list(workdir.glob(".tune.partial-*")) and not (workdir / "tune").exists()

    again = _run(demo)
    assert again.returncode == 0, again.stderr
    assert _statuses(again.stdout) == {"pick": "cached", "tune": "ran", "prune": "ran", "ship": "ran"}
    assert "interrupted last time" in again.stderr
    assert not list(workdir.glob(".*.partial-*")) and not list(workdir.glob(".*.old-*"))
    assert json.loads((workdir / ".gptctl-run" / "lock").read_text())["pid"] != first.pid


def test_a_dry_run_of_a_busy_workdir_says_so(demo):
    first = _start(demo, *SLOW)
    try:
        _wait_for(demo / "runs" / "demo", ".tune.partial-*/half-written.bin", first)
        plan = _run(demo, *SLOW, "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert json.loads(plan.stdout)["busy"]["pid"] == first.pid
        assert f"in use by run PID {first.pid}" in plan.stderr
    finally:
        first.kill()
        first.wait(timeout=30)
