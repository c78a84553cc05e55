"""`gptctl tune --backend ray`: the trials on Ray Tune, on a local cluster of 2 CPUs (the stand-in steps
of tests/recipe_fakes.py, imported by Ray's workers through PYTHONPATH), recorded exactly as the local
backend records them: the same trials.jsonl, front.json and report.html, constraints included."""

import json
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
        return sorted((json.loads(x) for x in (out / "trials.jsonl").read_text().splitlines()), key=lambda t: t["number"])

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
