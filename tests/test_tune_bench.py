"""benchmarks/bench_tune.py: its arguments, its dry run (plans, loads nothing), and its dominance rule."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_tune.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_tune", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arguments_parse_with_their_defaults():
    bench = _load()
    args = bench.parse_args([])
    assert (args.trials, args.time_budget, args.compare_trials, args.rerun_front) == (20, "30m", None, 1)
    assert args.recipe.name == "quickstart-tune.yaml" and not args.dry_run
    args = bench.parse_args(["--trials", "4", "--compare-trials", "2", "--sampler", "random"])
    assert (args.trials, args.compare_trials, args.sampler) == (4, 2, "random")
    for bad in (["--trials", "0"], ["--compare-trials", "-1"], ["--sampler", "grid"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_dominance_needs_lower_ppl_and_no_worse_speed_or_size():
    dominates = _load().dominates
    base = {"ppl": 10.0, "decode_tok_s": 100.0, "size_mb": 50.0}
    assert dominates({"ppl": 9.9, "decode_tok_s": 100.0, "size_mb": 50.0}, base)
    assert not dominates(base, base)
    assert not dominates({"ppl": 9.0, "decode_tok_s": 99.0, "size_mb": 40.0}, base)
    assert not dominates({"ppl": 9.0, "decode_tok_s": 120.0, "size_mb": 51.0}, base)


def test_dry_run_prints_the_plan_of_one_trial_and_runs_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--trials", "1", "--compare-trials", "1", "--dry-run", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "prune.options.ratio" in done.stdout and "plan: 1 trials" in done.stdout
    assert "1 separate `gptctl run`s" in done.stdout and "extrapolated" not in done.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written
