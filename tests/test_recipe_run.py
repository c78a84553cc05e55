"""Running recipes with stand-in steps: caching, resume after a kill, gates and exit codes, --json."""

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
from gptctl.recipe import parse_recipe, run_recipe

import recipe_fakes

RECIPE = """\
name: demo
vars:
  notes: ${recipe.dir}/notes.txt
steps:
  pick:
    kind: select
    options: {max_params: 200m}
  tune:
    kind: optimize
    method: lora
    options:
      model: ${steps.pick.model}
      data: ${vars.notes}
      rank: 8
  prune:
    kind: optimize
    method: prune
    options: {ratio: 0.3}
  ship:
    kind: export
    options: {quantize: int4}
gates:
  - steps.tune.metrics.ppl_after <= steps.tune.metrics.ppl_before
  - steps.ship.validation.max_abs_diff <= 1e-3
  - not steps.ship.benchmark.cuda.available or steps.ship.benchmark.cuda.decode_tokens_per_s >= 40
  - steps.ship.benchmark.cpu.decode_tokens_per_s >= 40
"""


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    recipe_fakes.install(monkeypatch)
    (tmp_path / "notes.txt").write_text("Take one tablet twice a day with food.\n")
    path = tmp_path / "demo.yaml"
    path.write_text(RECIPE)
    monkeypatch.chdir(tmp_path)
    return path


def cli(*args):
    return CliRunner().invoke(app, ["run", *map(str, args), "--no-progress"])


def statuses(result):
    return {s["name"]: s["status"] for s in json.loads(result.stdout)["steps"]}


def test_first_run_runs_everything_and_passes(recipe, tmp_path):
    result = cli(recipe)
    assert result.exit_code == 0, result.stderr
    for step in ("pick", "tune", "prune", "ship"):
        assert (tmp_path / "runs" / "demo" / step / "gptctl.json").is_file()  # default workdir runs/<name>/
    assert "Gates" in result.stdout and "Summary" in result.stdout and "pass" in result.stdout
    assert "demo passed" in result.stderr
    assert json.loads((tmp_path / "runs/demo/summary.json").read_text())["passed"] is True


def test_second_run_skips_every_step_and_says_why(recipe):
    assert cli(recipe, "--json").exit_code == 0
    recipe_fakes.CALLS.clear()
    result = cli(recipe, "--json")
    assert result.exit_code == 0
    assert set(statuses(result).values()) == {"cached"}
    assert recipe_fakes.CALLS == []
    assert result.stderr.count("cached, inputs, options and gptctl version unchanged") == 4


def test_changed_option_reruns_that_step_and_its_dependents_only(recipe):
    cli(recipe, "--json")
    recipe_fakes.CALLS.clear()
    result = cli(recipe, "--json", "--set", "steps.prune.options.ratio=0.5")
    assert statuses(result) == {"pick": "cached", "tune": "cached", "prune": "ran", "ship": "ran"}
    assert recipe_fakes.CALLS == ["prune", "ship"]
    assert "option ratio changed (0.3 -> 0.5)" in result.stderr
    assert "input model changed (new result from step prune)" in result.stderr


def test_changed_input_content_reruns_from_the_step_that_reads_it(recipe, tmp_path):
    cli(recipe, "--json")
    (tmp_path / "notes.txt").write_text("Different notes.\n")
    result = cli(recipe, "--json")
    assert statuses(result) == {"pick": "cached", "tune": "ran", "prune": "ran", "ship": "ran"}
    assert "input data changed (its content differs)" in result.stderr


def test_force_and_a_modified_output_rerun(recipe, tmp_path):
    cli(recipe, "--json")
    assert set(statuses(cli(recipe, "--json", "--force")).values()) == {"ran"}
    (tmp_path / "runs/demo/ship/weights.bin").write_text("edited by hand")
    result = cli(recipe, "--json")
    assert statuses(result)["ship"] == "ran"
    assert "was modified since it was written" in result.stderr


def test_gptctl_version_change_reruns(recipe, monkeypatch):
    cli(recipe, "--json")
    monkeypatch.setattr("gptctl.recipe.cache.__version__", "9.9.9")
    monkeypatch.setattr("gptctl.recipe.runner.__version__", "9.9.9")
    result = cli(recipe, "--json")
    assert set(statuses(result).values()) == {"ran"}
    assert "gptctl version changed (0.1.0 -> 9.9.9)" in result.stderr


def test_moved_workdir_reuses_nothing_but_same_workdir_reuses_all(recipe, tmp_path):
    cli(recipe, "--json", "--workdir", tmp_path / "a")
    assert set(statuses(cli(recipe, "--json", "--workdir", tmp_path / "a")).values()) == {"cached"}
    assert set(statuses(cli(recipe, "--json", "--workdir", tmp_path / "b")).values()) == {"ran"}


def test_failing_gate_exits_1_and_shows_every_gate(recipe):
    overrides = [
        "--set",
        "gates.1=steps.ship.validation.max_abs_diff <= 1e-9",
        "--set",
        "gates.4=steps.ship.benchmark.tpu.decode_tokens_per_s > 1",
    ]
    result = cli(recipe, *overrides)
    assert result.exit_code == 1
    assert result.stdout.count("pass") == 3 and result.stdout.count("FAIL") == 2
    assert "demo failed (2 of 5 gates)" in result.stderr
    gates = json.loads(cli(recipe, "--json", *overrides).stdout)["gates"]
    assert [g["passed"] for g in gates] == [True, False, True, True, False]
    assert gates[1]["detail"] == "0.0002 <= 1e-09"
    assert gates[4]["error"] == "steps.ship.benchmark.tpu: not in ship's manifest (it has: pytorch, cpu, cuda)"


def test_json_summary_schema(recipe):
    result = cli(recipe, "--json")
    data = json.loads(result.stdout)
    assert set(data) >= {"recipe", "workdir", "steps", "gates", "passed"}
    assert data["recipe"] == "demo" and data["passed"] is True
    for step in data["steps"]:
        assert set(step) >= {"name", "kind", "status", "duration_s", "output", "metrics"}
        assert step["status"] in ("ran", "cached", "failed")
        assert isinstance(step["duration_s"], float) and isinstance(step["metrics"], dict)
    ship = data["steps"][3]
    assert ship["validation"]["passed"] is True and ship["benchmark"]["cpu"]["decode_tokens_per_s"] == 90.0
    assert data["steps"][1]["metrics"]["ppl_after"] < data["steps"][1]["metrics"]["ppl_before"]
    for gate in data["gates"]:
        assert set(gate) >= {"expr", "values", "passed"}
    assert data["gates"][0]["values"]["steps.tune.metrics.ppl_after"] == data["steps"][1]["metrics"]["ppl_after"]


def test_failed_step_stops_the_run(recipe):
    result = cli(recipe, "--json", "--set", "steps.prune.options.fail=true")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert [s["status"] for s in data["steps"]] == ["ran", "ran", "failed", "not-run"]
    assert "prune failed on purpose" in data["steps"][2]["error"]
    assert data["passed"] is False and all(not g["passed"] for g in data["gates"])
    # The failure leaves nothing that looks finished; the next run redoes only that step onwards.
    assert not (Path(data["workdir"]) / "prune").exists()
    again = statuses(cli(recipe, "--json"))
    assert again == {"pick": "cached", "tune": "cached", "prune": "ran", "ship": "ran"}


def test_invalid_recipe_exits_2_before_running(recipe):
    result = cli(recipe, "--set", "steps.tune.options.rank=0")
    assert result.exit_code == 2
    assert "steps.tune.options.rank" in result.stderr
    assert recipe_fakes.CALLS == []


def test_dry_run_prints_the_plan_with_cache_status_and_exits_0(recipe):
    first = cli(recipe, "--dry-run")
    assert first.exit_code == 0
    assert "would run" in first.stdout and "no finished run yet" in first.stdout
    assert recipe_fakes.CALLS == []
    cli(recipe)
    recipe_fakes.CALLS.clear()
    result = cli(recipe, "--dry-run", "--json", "--set", "steps.ship.options.quantize=int8")
    assert result.exit_code == 0 and recipe_fakes.CALLS == []
    data = json.loads(result.stdout)
    assert [s["status"] for s in data["steps"]] == ["cached", "cached", "cached", "would-run"]
    assert "option quantize changed (int4 -> int8)" in data["steps"][3]["reason"]
    assert data["steps"][3]["options"]["quantize"] == "int8"
    assert data["steps"][3]["options"]["model"].endswith(os.path.join("demo", "prune"))


def test_resume_after_a_step_is_killed(recipe, tmp_path):
    """SIGKILL in the middle of a step: the next run keeps the finished steps and redoes the killed one."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(recipe_fakes.__file__).parent), *sys.path])}
    cmd = [sys.executable, recipe_fakes.__file__, "run", str(recipe), "--no-progress", "--json"]
    proc = subprocess.Popen(
        cmd + ["--set", "steps.prune.options.sleep=60"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    workdir = tmp_path / "runs" / "demo"
    deadline = time.time() + 60
    while not list(workdir.glob(".prune.partial-*/half-written.bin")):
        assert time.time() < deadline and proc.poll() is None, (
            proc.stderr.read().decode() if proc.poll() is not None else "timeout"
        )
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (workdir / "prune").exists()  # the half-finished step is not taken as done
    assert (workdir / "tune" / "gptctl.json").exists()

    result = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert statuses(result) == {"pick": "cached", "tune": "cached", "prune": "ran", "ship": "ran"}
    assert "interrupted last time" in result.stderr
    assert not list(workdir.glob(".prune.*"))  # the killed run's leftovers were cleaned up


def test_library_report_without_cli(recipe, tmp_path):
    r = parse_recipe(RECIPE, "demo.yaml", env={}, kinds=recipe_fakes.FAKE_KINDS, recipe_dir=tmp_path)
    events = []
    report = run_recipe(
        r, tmp_path / "lib", kinds=recipe_fakes.FAKE_KINDS, on_event=lambda e, s: events.append((e, s.name))
    )
    assert report.exit_code == 0 and report.passed
    assert events[:2] == [("start", "pick"), ("done", "pick")]


def test_each_step_reports_progress_under_its_own_name(recipe, tmp_path):
    seen = []

    class Recorder:
        def task(self, description, total=None):
            seen.append(description)
            from gptctl.progress import NULL_PROGRESS

            return NULL_PROGRESS.task(description, total)

        def info(self, message):
            seen.append(message)

    def optimize_with_progress(run):
        run.progress.task("training", total=3)
        run.progress.info("loading model")
        return recipe_fakes._optimize(run)

    import dataclasses

    kinds = dict(
        recipe_fakes.FAKE_KINDS,
        optimize=dataclasses.replace(recipe_fakes.FAKE_KINDS["optimize"], execute=optimize_with_progress),
    )
    r = parse_recipe(RECIPE, "demo.yaml", env={}, kinds=kinds, recipe_dir=tmp_path)
    assert run_recipe(r, tmp_path / "p", kinds=kinds, progress=Recorder()).exit_code == 0
    assert seen[0] == "recipe demo"
    assert ["tune: training", "tune: loading model", "prune: training", "prune: loading model"] == seen[1:]


def test_every_run_keeps_its_summary_and_a_cached_step_points_at_the_run_that_made_it(recipe, tmp_path):
    workdir = tmp_path / "runs" / "demo"
    first = json.loads(cli(recipe, "--json", "--set", "steps.tune.options.sleep=0.3").stdout)
    second = json.loads(cli(recipe, "--json", "--set", "steps.tune.options.sleep=0.3").stdout)
    assert first["run"] != second["run"]
    kept = sorted(p.name for p in (workdir / "summaries").iterdir())
    assert kept == sorted([f"{first['run']}.json", f"{second['run']}.json"])
    # The first run's summary is not overwritten by the cached rerun: its real durations stay.
    assert json.loads((workdir / "summaries" / f"{first['run']}.json").read_text()) == first
    assert json.loads((workdir / "summary.json").read_text()) == second  # summary.json: the latest
    tune_then, tune_now = first["steps"][1], second["steps"][1]
    assert tune_then["status"] == "ran" and tune_then["duration_s"] >= 0.3
    assert tune_now["status"] == "cached" and tune_now["duration_s"] == 0.0
    assert tune_now["produced_by"]["run"] == first["run"]
    assert tune_now["produced_by"]["summary"] == f"summaries/{first['run']}.json"
    assert tune_now["produced_by"]["duration_s"] == tune_then["duration_s"]
    assert Path(second["summary"]).resolve() == workdir / "summaries" / f"{second['run']}.json"


def test_a_step_failing_unexpectedly_exits_1_with_one_json_error(recipe, monkeypatch):
    import dataclasses

    def broken(run):
        raise ValueError("bad value deep inside a library")  # ValueError alone would read as bad input (2)

    from gptctl.recipe import steps

    monkeypatch.setitem(steps.KINDS, "export", dataclasses.replace(recipe_fakes.FAKE_KINDS["export"], execute=broken))
    result = cli(recipe, "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)  # one document: the summary so far plus the error
    assert data["exit_code"] == 1 and data["error"].startswith("step ship failed: ValueError: bad value")
    assert [s["status"] for s in data["steps"]] == ["ran", "ran", "ran", "failed"]
    assert result.stderr.count("error:") == 1 and "hint:" in result.stderr


def test_ctrl_c_during_a_step_exits_130_and_keeps_a_summary(recipe, monkeypatch, tmp_path):
    import dataclasses

    def interrupted(run):
        raise KeyboardInterrupt

    from gptctl.recipe import steps

    monkeypatch.setitem(
        steps.KINDS, "export", dataclasses.replace(recipe_fakes.FAKE_KINDS["export"], execute=interrupted)
    )
    result = cli(recipe, "--json")
    assert result.exit_code == 130
    data = json.loads(result.stdout)
    assert data["exit_code"] == 130 and data["error"] == "interrupted during step ship"
    assert [s["status"] for s in data["steps"]] == ["ran", "ran", "ran", "interrupted"]
    assert "run the same command again" in data["hint"]
    saved = json.loads((tmp_path / "runs/demo/summary.json").read_text())
    assert saved["steps"][3]["status"] == "interrupted" and saved["passed"] is False
