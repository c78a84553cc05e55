"""`gptctl tune --backend ray`: the trials on Ray Tune, on a local cluster of 2 CPUs (the stand-in steps
of tests/recipe_fakes.py, imported by Ray's workers through PYTHONPATH), recorded exactly as the local
backend records them: the same trials.jsonl, front.json and report.html, constraints included."""

import dataclasses
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptctl.cli.app import app

import recipe_fakes

ray = pytest.importorskip("ray", reason="Ray Tune is not installed (pip install 'gptctl[ray]')")
pytest.importorskip("ray.tune", reason="Ray Tune is not installed (pip install 'gptctl[ray]')")

RECIPE = """\
name: demo
steps:
  pick:
    kind: select
    options: {max_params: 200m}
  prune:
    kind: optimize
    method: prune
    options: {model: "${steps.pick.model}", ratio: 0.3}
  ship:
    kind: export
    options: {quantize: int4}
gates:
  - steps.prune.metrics.sparsity_realised >= 0.2
search:
  space:
    prune.options.ratio: [0.1, 0.3, 0.5]
  objectives: {ppl: min, steps.prune.metrics.sparsity_realised: max}
"""


@pytest.fixture(scope="module")
def cluster():
    tests = str(Path(__file__).resolve().parent)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": tests}})
    yield
    ray.shutdown()


def study(tmp_path, backend, *extra):
    recipe = tmp_path / "demo.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / backend
    result = CliRunner().invoke(
        app, ["tune", str(recipe), "--trials", "2", "--sampler", "random", "--output", str(out), "--json", *extra]
    )
    assert result.exit_code == 0, result.stderr + result.stdout
    return out, json.loads(result.stdout)


def test_two_trials_on_a_local_ray_cluster_match_the_local_backend(cluster, tmp_path, monkeypatch):
    recipe_fakes.install(monkeypatch)
    monkeypatch.chdir(tmp_path)
    here, local = study(tmp_path, "local")
    there, on_ray = study(tmp_path, "ray", "--backend", "ray", "--cpus-per-trial", "1")
    assert (there / "ray").is_dir()  # Ray Tune's own experiment folder: the trials really ran there

    def records(out):
        return sorted(
            (json.loads(x) for x in (out / "trials.jsonl").read_text().splitlines()), key=lambda t: t["number"]
        )

    mine, theirs = records(here), records(there)
    assert [t["number"] for t in theirs] == [0, 1] and len(on_ray["trials"]) == 2
    assert [set(t) for t in theirs] == [set(t) for t in mine]
    # Trial 0 is the recipe as written on both, with the same figures and constraints (the fakes are
    # deterministic); the constraints reached Optuna, so the front is feasible trials only.
    assert theirs[0]["baseline"] and theirs[0]["params"] == mine[0]["params"] == {"prune.options.ratio": 0.3}
    for key in ("state", "objectives", "constraints", "feasible"):
        assert theirs[0][key] == mine[0][key], key
    for t in theirs:
        assert t["constraints"] and (t["feasible"] == (t["params"]["prune.options.ratio"] >= 0.2))
    assert on_ray["front"] and all(p["params"]["prune.options.ratio"] >= 0.2 for p in on_ray["front"])
    front_local, front_ray = (json.loads((d / "front.json").read_text()) for d in (here, there))
    assert set(front_ray) == set(front_local)
    assert [set(p) for p in front_ray["front"]][:1] == [set(p) for p in front_local["front"]][:1]
    assert (there / "report.html").read_text().count("Pareto front") >= 1
    for p in on_ray["front"]:
        assert Path(p["recipe"]).is_file()


def _timed(execute):
    """A fake step's execute that also logs when it ran, to DIR/intervals.jsonl (DIR/trials/NNNN/STEP)."""

    def run(step_run):
        log = Path(step_run.output).resolve().parents[2] / "intervals.jsonl"
        if step_run.name == "ship":
            # Inside the benchmark slot: wait (bounded) until the other trial has pruned, so it is ready to
            # benchmark while this one is, however slowly Ray starts its worker on a loaded machine.
            deadline = time.time() + 60
            while time.time() < deadline and _count(log, "prune") < 2 and _count(log, "ship") == 0:
                time.sleep(0.1)
        start = time.time()
        try:
            return execute(step_run)
        finally:
            with log.open("a") as f:
                f.write(json.dumps({"step": step_run.name, "start": start, "end": time.time()}) + "\n")

    return run


def _count(log: Path, step: str) -> int:
    if not log.is_file():
        return 0
    return sum(json.loads(x)["step"] == step for x in log.read_text().splitlines())


def test_concurrent_trials_never_benchmark_at_once(cluster, tmp_path, monkeypatch):
    from gptctl.recipe import steps

    recipe_fakes.install(monkeypatch)
    for name in ("optimize", "export"):
        kind = recipe_fakes.FAKE_KINDS[name]
        monkeypatch.setitem(steps.KINDS, name, dataclasses.replace(kind, execute=_timed(kind.execute)))
    monkeypatch.chdir(tmp_path)
    # A benchmark far longer than a worker takes to start: the second trial is ready to benchmark while
    # the first one still is.
    text = RECIPE.replace("ratio: 0.3}", "ratio: 0.3, sleep: 0.1}").replace(
        "options: {quantize: int4}", "options: {quantize: int4, sleep: 1.0}"
    )
    text = text.replace("prune.options.ratio: [0.1, 0.3, 0.5]", "prune.options.seed: {int: [0, 100000]}")
    (tmp_path / "demo.yaml").write_text(text)
    out = tmp_path / "slot"
    result = CliRunner().invoke(
        app, ["tune", "demo.yaml", "--trials", "2", "--backend", "ray", "--output", str(out), "--json"]
    )
    assert result.exit_code == 0, result.stderr + result.stdout
    spans = [json.loads(x) for x in (out / "intervals.jsonl").read_text().splitlines()]
    prune = sorted((s["start"], s["end"]) for s in spans if s["step"] == "prune")
    ship = sorted((s["start"], s["end"]) for s in spans if s["step"] == "ship")
    assert len(prune) == len(ship) == 2
    assert prune[1][1] < ship[0][1]  # the second trial was ready to benchmark during the first's benchmark ...
    assert ship[1][0] >= ship[0][1]  # ... and waited for the benchmark slot
